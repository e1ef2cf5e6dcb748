/**
 * How one agent calls another: the same signed API a controller uses (TC3-HMAC-SHA256 over
 * HTTPS), with the peer's own API credential from this agent's `migration_peers` setting.
 */
import { request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import { readFile } from "node:fs/promises";
import { signTc3 } from "../core/tc3-sign.js";
import { DomainError } from "../core/errors.js";

/** A peer host this agent may move instances to (config `migration_peers`). */
export interface MigrationPeer {
  hostId: string;
  /** Its API: https://ADDRESS:PORT (http:// only for a loopback address). */
  endpoint: string;
  secretId: string;
  secretKey: string;
  /** PEM CA that signed the peer's API certificate; absent: the system's CAs. */
  caFile?: string;
  /** The address its libvirtd and QEMU take migration traffic on (link address). */
  migrationAddress: string;
  /** Its libvirtd for peer-to-peer migration; default qemu+tcp://<migrationAddress>/system. */
  libvirtUri?: string;
}

/** The peer answered with an API error (its code and message). */
export class PeerApiError extends Error {
  override name = "PeerApiError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface PeerCall {
  (action: string, body: Record<string, unknown>, options?: { timeoutMs?: number }): Promise<Record<string, unknown>>;
}

/** A client for one peer; every call is one signed POST. */
export function peerClient(peer: MigrationPeer, endpoint = peer.endpoint): PeerCall {
  const url = new URL(endpoint);
  let ca: Promise<Buffer | undefined> | undefined;
  return async (action, body, options = {}) => {
    ca ??= peer.caFile ? readFile(peer.caFile) : Promise.resolve(undefined);
    const caPem = await ca;
    const payload = JSON.stringify(body);
    const host = url.host;
    const timestamp = Math.floor(Date.now() / 1000);
    const authorization = signTc3({
      secretId: peer.secretId,
      secretKey: peer.secretKey,
      service: "cvm",
      host,
      timestamp,
      payload,
      contentType: "application/json",
    });
    const headers = {
      Host: host,
      "Content-Type": "application/json",
      "X-TC-Action": action,
      "X-TC-Version": "2017-03-12",
      "X-TC-Timestamp": String(timestamp),
      "X-TC-Region": "ap-guangzhou",
      Authorization: authorization,
      "Content-Length": String(Buffer.byteLength(payload)),
    };
    const timeoutMs = options.timeoutMs ?? 60_000;
    const text = await new Promise<string>((resolve, reject) => {
      const common = { method: "POST", hostname: url.hostname, port: url.port, path: "/", headers, timeout: timeoutMs };
      const req =
        url.protocol === "https:"
          ? httpsRequest({ ...common, ...(caPem ? { ca: caPem } : {}) })
          : httpRequest(common);
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`no answer from ${url.host} within ${timeoutMs} ms`)));
      req.on("error", reject);
      req.end(payload);
    }).catch((error: unknown) => {
      throw new DomainError("HostFailure", `peer ${peer.hostId} (${url.host}) unreachable: ${(error as Error).message}`, {}, { cause: error });
    });
    let parsed: { Response?: Record<string, unknown> & { Error?: { Code: string; Message: string } } };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      throw new DomainError("HostFailure", `peer ${peer.hostId} answered ${action} with something that is not JSON`);
    }
    const response = parsed.Response;
    if (!response) throw new DomainError("HostFailure", `peer ${peer.hostId} answered ${action} without a Response`);
    if (response.Error) throw new PeerApiError(response.Error.Code, `peer ${peer.hostId}: ${action}: ${response.Error.Code}: ${response.Error.Message}`);
    return response;
  };
}
