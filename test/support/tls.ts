/**
 * TLS helpers for the API tests: a certificate set made with the openssl CLI (two CAs,
 * two server certificates for 127.0.0.1 from the first CA, a client certificate from
 * each), fingerprints, and one signed DescribeInstances over an open TLS connection.
 */
import { execa } from "execa";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { signTc3 } from "../../agent/api/tc3.js";

/**
 * Makes in `dir`: ca.{crt,key}, otherca.{crt,key}, server1/server2.{crt,key} (signed by
 * ca, for IP 127.0.0.1), client.{crt,key} (ca) and stranger.{crt,key} (otherca).
 */
export async function makeCertificates(dir: string): Promise<void> {
  const openssl = (...args: string[]) => execa("openssl", args, { cwd: dir });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  for (const ca of ["ca", "otherca"]) {
    await openssl("req", "-x509", ...newKey, "-keyout", `${ca}.key`, "-out", `${ca}.crt`, "-days", "2", "-subj", `/CN=${ca}`);
  }
  const leaves: Array<[string, string, "server" | "client"]> = [
    ["server1", "ca", "server"],
    ["server2", "ca", "server"],
    ["client", "ca", "client"],
    ["stranger", "otherca", "client"],
  ];
  for (const [name, ca, kind] of leaves) {
    const ext =
      kind === "server"
        ? "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"
        : "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
    await writeFile(join(dir, `${name}.ext`), ext);
    await openssl("req", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    await openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.crt`, "-CAkey", `${ca}.key`, "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`);
  }
}

/** SHA-256 fingerprint of a PEM certificate file, as TLSSocket#getPeerCertificate gives it. */
export async function fingerprint(certFile: string): Promise<string> {
  const { stdout } = await execa("openssl", ["x509", "-in", certFile, "-noout", "-fingerprint", "-sha256"]);
  return stdout.split("=")[1]!.trim().toUpperCase();
}

/** Opens a TLS connection to 127.0.0.1:port (with a client certificate when given). */
export function openTls(port: number, o: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: "127.0.0.1", port, ca: o.ca, ...(o.cert ? { cert: o.cert, key: o.key } : {}) }, () => resolve(s));
    s.once("error", reject);
  });
}

/** One signed DescribeInstances on an open (kept-alive) connection; resolves with the answer's JSON. */
export function describeOn(
  s: TLSSocket,
  port: number,
  credential: { secretId: string; secretKey: string },
): Promise<{ Response: { TotalCount?: number; Error?: { Code: string } } }> {
  const body = "{}";
  const timestamp = Math.floor(Date.now() / 1000);
  const authorization = signTc3({ ...credential, service: "cvm", host: "127.0.0.1", timestamp, payload: body, contentType: "application/json" });
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (d: Buffer) => {
      text += d.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const m = /content-length: (\d+)/i.exec(text);
      if (end >= 0 && m && text.length >= end + 4 + Number(m[1])) {
        s.off("data", onData);
        resolve(JSON.parse(text.slice(end + 4)) as { Response: { TotalCount?: number; Error?: { Code: string } } });
      }
    };
    s.on("data", onData);
    s.once("error", reject);
    s.write(
      `POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nX-TC-Action: DescribeInstances\r\n` +
        `X-TC-Version: 2017-03-12\r\nX-TC-Timestamp: ${timestamp}\r\nAuthorization: ${authorization}\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
  });
}
