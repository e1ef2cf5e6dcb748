/**
 * OpenSSH public keys: parse one `authorized_keys`-style line, build the `ssh-rsa`
 * line of a node KeyObject, and compute the SHA256 fingerprint `ssh-keygen -l` shows.
 * The wire format (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709 §4) is read here and every
 * key is then handed to node:crypto as a JWK, which checks that an EC point lies on
 * its curve. Pure: no I/O.
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";

export type SshKeyType = "ssh-rsa" | "ssh-ed25519" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521";

export const SUPPORTED_KEY_TYPES: readonly SshKeyType[] = [
  "ssh-rsa",
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
];

export const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 16384; // OpenSSH's own limit
const MAX_LINE = 16 * 1024;

const EC_CURVES = {
  "ecdsa-sha2-nistp256": { id: "nistp256", jwk: "P-256", coordinate: 32 },
  "ecdsa-sha2-nistp384": { id: "nistp384", jwk: "P-384", coordinate: 48 },
  "ecdsa-sha2-nistp521": { id: "nistp521", jwk: "P-521", coordinate: 66 },
} as const;

export interface SshPublicKey {
  type: SshKeyType;
  /** The key blob (the base64 field of the line, decoded). */
  blob: Buffer;
  /** The line's comment, or "" when it has none. */
  comment: string;
  /** Key size: the modulus length for RSA, the curve size otherwise. */
  bits: number;
  key: KeyObject;
}

/** Why a line is not an acceptable public key; the message is meant for the API user. */
export class SshKeyError extends Error {
  override readonly name = "SshKeyError";
}

/** Parses one OpenSSH public key line (`type base64 [comment]`) or throws SshKeyError. */
export function parseSshPublicKey(text: string): SshPublicKey {
  if (text.length > MAX_LINE) throw new SshKeyError(`is longer than ${MAX_LINE} characters`);
  const line = text.trim();
  if (line === "") throw new SshKeyError("is empty");
  if (/PRIVATE KEY-----/.test(line) || line.startsWith("PuTTY-User-Key-File")) {
    throw new SshKeyError("is a private key; import only the public key (ssh-keygen -y -f <private key> prints it)");
  }
  if (line.startsWith("-----BEGIN")) {
    throw new SshKeyError("is a PEM block; give the key in OpenSSH format (`ssh-rsa AAAA… comment`)");
  }
  if (/[\r\n]/.test(line)) throw new SshKeyError("must be a single line holding one key");
  const fields = line.split(/[ \t]+/);
  const [type, data] = fields;
  const comment = fields.slice(2).join(" ");
  if (type === undefined || data === undefined) throw new SshKeyError("is not of the form `<type> <base64 key> [comment]`");
  if (!(SUPPORTED_KEY_TYPES as readonly string[]).includes(type)) {
    throw new SshKeyError(
      `has type ${JSON.stringify(type.slice(0, 40))}; supported are ${SUPPORTED_KEY_TYPES.join(", ")} (authorized_keys options are not accepted)`,
    );
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data)) throw new SshKeyError("has a key field that is not base64");
  const blob = Buffer.from(data, "base64");
  if (blob.toString("base64") !== data) throw new SshKeyError("has a key field that is not canonical base64");
  const parsed = parseBlob(blob);
  if (parsed.type !== type) throw new SshKeyError(`says ${type} but the key inside is ${parsed.type}`);
  return { ...parsed, blob, comment };
}

function parseBlob(blob: Buffer): Omit<SshPublicKey, "blob" | "comment"> {
  const r = new WireReader(blob);
  const type = r.string().toString("latin1");
  let result: Omit<SshPublicKey, "blob" | "comment">;
  if (type === "ssh-rsa") {
    const e = r.mpint();
    const n = r.mpint();
    const bits = bitLength(n);
    if (bits < MIN_RSA_BITS) throw new SshKeyError(`is an RSA key of ${bits} bits; at least ${MIN_RSA_BITS} are required`);
    if (bits > MAX_RSA_BITS) throw new SshKeyError(`is an RSA key of ${bits} bits; at most ${MAX_RSA_BITS} are supported`);
    if (bitLength(e) < 2 || ((e[e.length - 1] ?? 0) & 1) === 0) throw new SshKeyError("has an invalid RSA exponent");
    result = { type, bits, key: jwkKey({ kty: "RSA", n: b64url(n), e: b64url(e) }) };
  } else if (type === "ssh-ed25519") {
    const pk = r.string();
    if (pk.length !== 32) throw new SshKeyError("has an Ed25519 key that is not 32 bytes");
    result = { type, bits: 256, key: jwkKey({ kty: "OKP", crv: "Ed25519", x: b64url(pk) }) };
  } else if (type in EC_CURVES) {
    const curve = EC_CURVES[type as keyof typeof EC_CURVES];
    const id = r.string().toString("latin1");
    if (id !== curve.id) throw new SshKeyError(`names curve ${JSON.stringify(id)} inside a ${type} key`);
    const q = r.string();
    const c = curve.coordinate;
    if (q.length !== 1 + 2 * c || q[0] !== 0x04) throw new SshKeyError("has an EC point that is not an uncompressed point of its curve");
    const x = q.subarray(1, 1 + c);
    const y = q.subarray(1 + c);
    result = {
      type: type as SshKeyType,
      bits: type === "ecdsa-sha2-nistp521" ? 521 : c * 8,
      key: jwkKey({ kty: "EC", crv: curve.jwk, x: b64url(x), y: b64url(y) }),
    };
  } else {
    throw new SshKeyError(`holds an unsupported key type ${JSON.stringify(type.slice(0, 40))}`);
  }
  if (!r.atEnd()) throw new SshKeyError("has trailing bytes after the key");
  return result;
}

function jwkKey(jwk: Record<string, string>): KeyObject {
  try {
    return createPublicKey({ key: jwk, format: "jwk" });
  } catch (error) {
    throw new SshKeyError("is not a valid public key", { cause: error });
  }
}

/** `ssh-rsa <base64> <comment>` for an RSA public KeyObject. */
export function rsaPublicKeyLine(key: KeyObject, comment: string): string {
  const jwk = key.export({ format: "jwk" });
  if (jwk.kty !== "RSA" || !jwk.n || !jwk.e) throw new TypeError("rsaPublicKeyLine: not an RSA key");
  const blob = Buffer.concat([
    wireString(Buffer.from("ssh-rsa")),
    wireMpint(Buffer.from(jwk.e, "base64url")),
    wireMpint(Buffer.from(jwk.n, "base64url")),
  ]);
  return formatSshPublicKey("ssh-rsa", blob, comment);
}

export function formatSshPublicKey(type: SshKeyType, blob: Buffer, comment: string): string {
  return comment === "" ? `${type} ${blob.toString("base64")}` : `${type} ${blob.toString("base64")} ${comment}`;
}

/** `SHA256:<base64 without padding>`, as `ssh-keygen -l -E sha256` prints. */
export function sshFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

// --- wire format helpers ---------------------------------------------------

class WireReader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}

  string(): Buffer {
    if (this.at + 4 > this.buf.length) throw new SshKeyError("has a truncated key blob");
    const len = this.buf.readUInt32BE(this.at);
    this.at += 4;
    if (this.at + len > this.buf.length) throw new SshKeyError("has a truncated key blob");
    const out = this.buf.subarray(this.at, this.at + len);
    this.at += len;
    return out;
  }

  /** A positive mpint, returned without leading zero bytes. */
  mpint(): Buffer {
    const raw = this.string();
    if (raw.length === 0 || ((raw[0] ?? 0) & 0x80) !== 0) throw new SshKeyError("has a zero or negative RSA number");
    let i = 0;
    while (i < raw.length && raw[i] === 0) i++;
    return raw.subarray(i);
  }

  atEnd(): boolean {
    return this.at === this.buf.length;
  }
}

function bitLength(unsigned: Buffer): number {
  const top = unsigned[0];
  if (top === undefined) return 0;
  return (unsigned.length - 1) * 8 + (32 - Math.clz32(top));
}

function b64url(b: Buffer): string {
  return b.toString("base64url");
}

function wireString(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

function wireMpint(unsigned: Buffer): Buffer {
  let i = 0;
  while (i < unsigned.length - 1 && unsigned[i] === 0) i++;
  const body = unsigned.subarray(i);
  return wireString(((body[0] ?? 0) & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), body]) : body);
}
