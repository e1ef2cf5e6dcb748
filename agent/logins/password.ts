/**
 * Login passwords: the complexity check the API applies to `LoginSettings.Password`
 * (and ResetInstancesPassword's `Password`), and SHA-512 crypt (`$6$…`) hashes for
 * writing a password into a guest's /etc/shadow or cloud-init's `hashed_passwd`
 * without handing the guest the plaintext.
 *
 * PASSWORD RULE — the seeds disagree, and this is the choice:
 *   - LoginSettings (API structure page): Linux 10–30 chars, ≥3 classes, a short
 *     special-character list; Windows cut off.
 *   - ResetInstancesPassword and the CDH console page: Linux 8–16 chars, ≥2 classes;
 *     Windows 12–16 chars, ≥3 classes.
 *   - The CVM user guide's "登录密码" page: Linux 8–30, Windows 12–30, ≥3 classes,
 *     must not start with "/", Windows must not contain the user name.
 *   A user who set a password through one path expects every other path to take it,
 *   so the agent applies ONE rule to creation, reinstall and reset, wide enough to
 *   accept what the lenient pages accept (which is also what Tencent's current public
 *   API reference says), plus the guide's two restrictions that protect the guest:
 *     Linux:   8–30 characters, at least 2 of the 4 classes below;
 *     Windows: 12–30 characters, at least 3 of the 4 classes, and must not contain the
 *              user name (default `Administrator`; case-insensitive) — Windows itself
 *              refuses such a password, so accepting it would only fail later in the guest;
 *     both:    only characters of the classes [a-z], [A-Z], [0-9] and the specials
 *              ( ) ` ~ ! @ # $ % ^ & * - + = _ | { } [ ] : ; ' < > , . ? / \
 *              (the union of the pages' lists); must not start with "/" (Windows'
 *              `net user` would read it as an option).
 *   Any breach is `InvalidPassword`, the only password code the seed has.
 *
 * SHA-512 crypt is implemented here from Ulrich Drepper's "Unix crypt using SHA-256 and
 * SHA-512" specification (the algorithm glibc's crypt(3) uses for `$6$`); it needs only
 * node:crypto's SHA-512, so no dependency is added. Tests compare it with glibc (through
 * Python's crypt module and `openssl passwd -6`) and with the specification's vectors.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { addSecret } from "../../drivers/exec/sanitize.js";
import { DomainError } from "../core/errors.js";

export type OsType = "linux" | "windows";

export const PASSWORD_SPECIALS = "()`~!@#$%^&*-+=_|{}[]:;'<>,.?/\\";

interface PasswordRule {
  minLength: number;
  maxLength: number;
  minClasses: number;
}

const RULES: Readonly<Record<OsType, PasswordRule>> = Object.freeze({
  linux: { minLength: 8, maxLength: 30, minClasses: 2 },
  windows: { minLength: 12, maxLength: 30, minClasses: 3 },
});

export interface CheckPasswordOptions {
  /** The parameter named in the error message. Default `LoginSettings.Password`. */
  field?: string;
  /** Windows only: the account whose password this is. Default `Administrator`. */
  userName?: string;
}

/** Throws DomainError(BadPassword) unless `password` meets the rule above for `osType`. */
export function checkPassword(password: string, osType: OsType, options: CheckPasswordOptions = {}): void {
  const field = options.field ?? "LoginSettings.Password";
  const rule = RULES[osType];
  const os = osType === "linux" ? "Linux" : "Windows";
  const fail = (why: string): never => {
    throw new DomainError("BadPassword", `\`${field}\` ${why}`);
  };
  // Count code points, not UTF-16 units, so a message about length is right even for
  // characters that are refused anyway.
  const length = [...password].length;
  if (length < rule.minLength || length > rule.maxLength) {
    fail(`must be ${rule.minLength} to ${rule.maxLength} characters long for ${os} instances (got ${length})`);
  }
  let lower = false;
  let upper = false;
  let digit = false;
  let special = false;
  for (const ch of password) {
    if (ch >= "a" && ch <= "z") lower = true;
    else if (ch >= "A" && ch <= "Z") upper = true;
    else if (ch >= "0" && ch <= "9") digit = true;
    else if (PASSWORD_SPECIALS.includes(ch)) special = true;
    else fail(`contains a character that is not allowed (${describeChar(ch)}); use a-z, A-Z, 0-9 and ${PASSWORD_SPECIALS}`);
  }
  const classes = Number(lower) + Number(upper) + Number(digit) + Number(special);
  if (classes < rule.minClasses) {
    fail(
      `must contain at least ${rule.minClasses} of: lowercase letters, uppercase letters, digits, special characters (${PASSWORD_SPECIALS}) for ${os} instances`,
    );
  }
  if (password.startsWith("/")) fail('must not start with "/"');
  if (osType === "windows") {
    const userName = options.userName ?? "Administrator";
    if (userName.length > 0 && password.toLowerCase().includes(userName.toLowerCase())) {
      fail(`must not contain the user name ${userName}`);
    }
  }
}

function describeChar(ch: string): string {
  if (ch === " ") return "a space";
  const cp = ch.codePointAt(0) ?? 0;
  return `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
}

// ---------------------------------------------------------------------------
// SHA-512 crypt ($6$), after Drepper's specification.

const ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DEFAULT_ROUNDS = 5000; // the specification's default; written into the hash only when asked for
const MIN_ROUNDS = 1000; // smaller requests are raised to this, as glibc does
const MAX_ROUNDS = 999_999_999; // larger requests are lowered to this, as glibc does
const MAX_SALT = 16; // longer salts are cut to 16 characters, as glibc does
const SETTING = /^\$6\$(?:rounds=([0-9]+)\$)?([^$]*)(?:\$(.*))?$/s;

/**
 * Hashes `password` (as UTF-8) into a glibc-compatible `$6$[rounds=N$]salt$hash` string.
 * `salt` is either bare salt characters (none of `$`, `:` or a newline; longer than 16
 * is cut) or a whole `$6$…` setting/hash whose salt and rounds are reused. Without a
 * salt, 16 random characters are drawn. `rounds` overrides the setting's; it is clamped
 * to 1000…999,999,999, and written into the result whenever it was given.
 */
export function sha512Crypt(password: string, salt?: string, rounds?: number): string {
  let saltChars: string;
  let roundsGiven: number | undefined = rounds;
  if (salt === undefined) {
    saltChars = randomSalt();
  } else if (salt.startsWith("$6$")) {
    const m = SETTING.exec(salt);
    if (!m) throw new RangeError("sha512Crypt: malformed $6$ setting");
    saltChars = m[2] ?? "";
    if (roundsGiven === undefined && m[1] !== undefined) roundsGiven = Number(m[1]);
  } else {
    saltChars = salt;
  }
  if (/[$:\n]/.test(saltChars)) throw new RangeError("sha512Crypt: the salt must not contain '$', ':' or a newline");
  if (roundsGiven !== undefined && !(Number.isSafeInteger(roundsGiven) && roundsGiven >= 0)) {
    throw new RangeError("sha512Crypt: rounds must be a non-negative integer");
  }
  saltChars = saltChars.slice(0, MAX_SALT);
  const effectiveRounds =
    roundsGiven === undefined ? DEFAULT_ROUNDS : Math.min(MAX_ROUNDS, Math.max(MIN_ROUNDS, roundsGiven));
  const digest = sha512CryptDigest(Buffer.from(password, "utf8"), Buffer.from(saltChars, "utf8"), effectiveRounds);
  const roundsPart = roundsGiven === undefined ? "" : `rounds=${effectiveRounds}$`;
  const hash = `$6$${roundsPart}${saltChars}$${encodeDigest(digest)}`;
  // The password and its hash are scrubbed from every log line and command error (sanitize.ts).
  addSecret(password);
  addSecret(hash);
  return hash;
}

/** True when `hash` is a `$6$` hash of `password`. A malformed hash is simply false. */
export function verifySha512Crypt(password: string, hash: string): boolean {
  const m = SETTING.exec(hash);
  if (!m || m[3] === undefined || m[3].length !== 86) return false;
  let expected: string;
  try {
    expected = sha512Crypt(password, hash);
  } catch {
    return false;
  }
  const a = Buffer.from(expected, "utf8");
  const b = Buffer.from(hash, "utf8");
  return a.length === b.length && timingSafeEqual(a, b);
}

function randomSalt(): string {
  // 64 symbols: a byte modulo 64 is uniform.
  return [...randomBytes(MAX_SALT)].map((b) => ALPHABET[b & 63]).join("");
}

function sha512(...parts: Buffer[]): Buffer {
  const h = createHash("sha512");
  for (const p of parts) h.update(p);
  return h.digest();
}

/** `length` bytes made of `block` repeated (the specification's "P" and "S" sequences). */
function repeatTo(block: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += block.length) block.copy(out, i, 0, Math.min(block.length, length - i));
  return out;
}

function sha512CryptDigest(key: Buffer, salt: Buffer, rounds: number): Buffer {
  // Digest B: key, salt, key.
  const b = sha512(key, salt, key);

  // Digest A: key, salt, then B for every full or partial 64 bytes of the key, then
  // for each bit of the key's length (lowest first) B when 1, the key when 0.
  const a = createHash("sha512");
  a.update(key);
  a.update(salt);
  a.update(repeatTo(b, key.length));
  for (let n = key.length; n > 0; n >>= 1) a.update(n & 1 ? b : key);
  let c = a.digest();

  // Sequence P: digest of the key repeated key-length times, stretched to the key's length.
  const dp = createHash("sha512");
  for (let i = 0; i < key.length; i++) dp.update(key);
  const p = repeatTo(dp.digest(), key.length);

  // Sequence S: digest of the salt repeated 16 + A[0] times, stretched to the salt's length.
  const ds = createHash("sha512");
  for (let i = 0; i < 16 + (c[0] ?? 0); i++) ds.update(salt);
  const s = repeatTo(ds.digest(), salt.length);

  for (let i = 0; i < rounds; i++) {
    const h = createHash("sha512");
    h.update(i & 1 ? p : c);
    if (i % 3 !== 0) h.update(s);
    if (i % 7 !== 0) h.update(p);
    h.update(i & 1 ? c : p);
    c = h.digest();
  }
  return c;
}

/**
 * The specification's base-64 of the 64-byte digest: 21 groups of three bytes taken
 * in a fixed shuffle (bytes i, i+21, i+42 rotated), then the last byte alone, each
 * group written least significant 6 bits first.
 */
function encodeDigest(d: Buffer): string {
  let out = "";
  const put = (b2: number, b1: number, b0: number, chars: number): void => {
    let w = (b2 << 16) | (b1 << 8) | b0;
    for (let i = 0; i < chars; i++) {
      out += ALPHABET[w & 63];
      w >>= 6;
    }
  };
  const byte = (i: number): number => d[i] ?? 0;
  for (let g = 0; g < 21; g++) {
    const first = (g * 22) % 63;
    put(byte(first), byte((first + 21) % 63), byte((first + 42) % 63), 4);
  }
  put(0, 0, byte(63), 2);
  return out;
}
