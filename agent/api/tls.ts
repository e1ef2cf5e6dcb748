/**
 * TLS for the controller API: the certificate, key and (for mutual TLS) the client
 * CA are PEM files named by api_tls_cert, api_tls_key and api_tls_client_ca. They
 * are read at start (a file that cannot be read or parsed stops the agent, naming
 * the key and the file) and again on SIGHUP, when the listener's secure context is
 * swapped (tls.Server#setSecureContext): open connections keep the context they
 * were made with, new ones get the new one.
 *
 * Why plain HTTP is refused off loopback (config.ts): every request carries a
 * SecretKey signature that anyone who sees it can replay for 300 s with another
 * X-TC-Action (the SDK signs only content-type and host), ResetInstancesPassword
 * carries passwords and CreateKeyPair answers with a private key.
 */
import { readFileSync } from "node:fs";
import { createSecureContext, type SecureContextOptions } from "node:tls";

export interface ApiTlsFiles {
  /** PEM certificate chain (api_tls_cert). */
  readonly certFile: string;
  /** PEM private key (api_tls_key). */
  readonly keyFile: string;
  /** PEM CA certificates a client certificate must chain to (api_tls_client_ca); absent = no client certificate asked for. */
  readonly clientCaFile?: string;
}

/** A problem with one TLS file: which config key, which file, what. */
export class TlsFileError extends Error {
  override readonly name = "TlsFileError";
}

function readPem(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new TlsFileError(`${key} ${file} cannot be read: ${(error as Error).message}`, { cause: error });
  }
}

/** Reads the files and proves they make a secure context; throws TlsFileError naming the key and file. */
export function loadTlsContext(files: ApiTlsFiles): SecureContextOptions {
  const options: SecureContextOptions = {
    cert: readPem("api_tls_cert", files.certFile),
    key: readPem("api_tls_key", files.keyFile),
    minVersion: "TLSv1.2",
  };
  if (files.clientCaFile !== undefined) options.ca = readPem("api_tls_client_ca", files.clientCaFile);
  try {
    createSecureContext(options);
  } catch (error) {
    const names = [`api_tls_cert ${files.certFile}`, `api_tls_key ${files.keyFile}`];
    if (files.clientCaFile !== undefined) names.push(`api_tls_client_ca ${files.clientCaFile}`);
    throw new TlsFileError(`${names.join(", ")} do not make a TLS context: ${(error as Error).message}`, { cause: error });
  }
  return options;
}

/** Whether a listen host is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  if (/^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
