/**
 * One registry of the secrets the agent handles, and one function that scrubs them out of
 * any text: every log line (agent/log.ts hooks it into pino) and every ExecError (message,
 * argv, stdout, stderr; runner.ts). Each secret is registered once, where it enters the
 * agent: the API SecretKeys at start, a request's passwords and user data when the request
 * is parsed, the private key CreateKeyPair makes, the instance records' password hashes.
 * The model is Renovate's lib/util/sanitize.ts (a set of secrets replaced in every log line
 * and error message); the differences are written below.
 *
 * - A secret is also scrubbed in the forms it takes on the way to a log line: JSON-escaped
 *   (a log line is JSON), base64 (the guest agent's password field, user data), and
 *   percent-encoded (a URL).
 * - The agent runs for months, so the registry is bounded: at most `maxSecrets` secrets and
 *   `maxChars` characters of scrubbed forms; past either, the secrets registered longest ago
 *   are forgotten first (registering a secret again makes it the newest). Texts shorter
 *   than `minLength` are not registered: scrubbing every "root" or "1234" would blank out
 *   the logs without protecting anything (every password the API accepts is 8 or longer).
 * - Two shapes are scrubbed whether registered or not: the user:password part of any URL
 *   (`scheme://user:password@host`) and PEM private key blocks.
 * - Matching walks the text once and looks candidates up by their first characters, so
 *   thousands of registered secrets cost a scan, not thousands of scans, per log line.
 *
 * A process-wide instance, `secrets`, is what the agent uses (like Renovate's module-level
 * sets: a secret must be scrubbed from every log line, whichever module writes it); tests
 * make their own instances.
 */

/** What a scrubbed secret is replaced with (also pino's censor, agent/log.ts). */
export const REDACTED = "[redacted]";

export interface SanitizerOptions {
  /** Secrets kept at most (oldest forgotten first). Default 10 000. */
  maxSecrets?: number;
  /** Characters of scrubbed forms kept at most, summed over all secrets. Default 16 Mi. */
  maxChars?: number;
  /** Shorter texts are not registered. Default 6. */
  minLength?: number;
}

/** Characters a candidate is looked up by; minLength may not be smaller. */
const PREFIX = 4;

/** `scheme://userinfo@`: the userinfo goes (whatever it holds: a token alone is a secret too). */
const URL_USERINFO = /\b([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^\s/?#@"'<>\\]+@/g;
/** A PEM private key block, raw or with its newlines escaped (inside a JSON log line). */
const PEM_PRIVATE_KEY = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?-----END \1PRIVATE KEY-----/g;

export class Sanitizer {
  private readonly maxSecrets: number;
  private readonly maxChars: number;
  private readonly minLength: number;
  /** Secret -> its scrubbed forms, oldest first (Map keeps insertion order). */
  private readonly secrets = new Map<string, readonly string[]>();
  /** Scrubbed form -> how many secrets have it. */
  private readonly forms = new Map<string, number>();
  /** First PREFIX characters -> forms starting with them, longest first. */
  private readonly byPrefix = new Map<string, string[]>();
  private chars = 0;

  constructor(options: SanitizerOptions = {}) {
    this.maxSecrets = options.maxSecrets ?? 10_000;
    this.maxChars = options.maxChars ?? 16 * 1024 * 1024;
    this.minLength = Math.max(PREFIX, options.minLength ?? 6);
  }

  /** Number of secrets registered. */
  get size(): number {
    return this.secrets.size;
  }

  /** Registers a secret (undefined, empty and short texts are ignored). */
  add(secret: string | undefined | null): void {
    if (typeof secret !== "string" || secret.length < this.minLength) return;
    const known = this.secrets.get(secret);
    if (known) {
      // The newest again: it is forgotten last.
      this.secrets.delete(secret);
      this.secrets.set(secret, known);
      return;
    }
    const forms = formsOf(secret).filter((f) => f.length >= this.minLength);
    const size = forms.reduce((n, f) => n + f.length, 0);
    if (size > this.maxChars) return;
    this.secrets.set(secret, forms);
    for (const form of forms) this.addForm(form);
    this.chars += size;
    while (this.secrets.size > this.maxSecrets || this.chars > this.maxChars) this.forgetOldest();
  }

  /** Whether `secret` is registered (tests, diagnostics). */
  has(secret: string): boolean {
    return this.secrets.has(secret);
  }

  /** Forgets every secret (tests). */
  clear(): void {
    this.secrets.clear();
    this.forms.clear();
    this.byPrefix.clear();
    this.chars = 0;
  }

  /** The text with every registered secret, URL password and private key replaced by REDACTED. */
  sanitize(text: string): string {
    if (typeof text !== "string" || text.length === 0) return text;
    let out = this.byPrefix.size > 0 && text.length >= this.minLength ? this.scrubRegistered(text) : text;
    if (out.includes("://")) out = out.replace(URL_USERINFO, `$1${REDACTED}@`);
    if (out.includes("PRIVATE KEY-----")) out = out.replace(PEM_PRIVATE_KEY, REDACTED);
    return out;
  }

  /** sanitize() of each element. */
  sanitizeAll(texts: readonly string[]): string[] {
    return texts.map((t) => this.sanitize(t));
  }

  private scrubRegistered(text: string): string {
    let out = "";
    let copied = 0;
    let i = 0;
    const last = text.length - this.minLength;
    while (i <= last) {
      const candidates = this.byPrefix.get(text.slice(i, i + PREFIX));
      const hit = candidates?.find((c) => text.startsWith(c, i));
      if (hit === undefined) {
        i += 1;
        continue;
      }
      out += text.slice(copied, i) + REDACTED;
      i += hit.length;
      copied = i;
    }
    return copied === 0 ? text : out + text.slice(copied);
  }

  private addForm(form: string): void {
    const count = this.forms.get(form) ?? 0;
    this.forms.set(form, count + 1);
    if (count > 0) return;
    const key = form.slice(0, PREFIX);
    const list = this.byPrefix.get(key) ?? [];
    // Longest first: of two forms at one place, the longer one is scrubbed whole.
    const at = list.findIndex((f) => f.length < form.length);
    if (at < 0) list.push(form);
    else list.splice(at, 0, form);
    this.byPrefix.set(key, list);
  }

  private removeForm(form: string): void {
    const count = this.forms.get(form) ?? 0;
    if (count > 1) {
      this.forms.set(form, count - 1);
      return;
    }
    this.forms.delete(form);
    const key = form.slice(0, PREFIX);
    const list = (this.byPrefix.get(key) ?? []).filter((f) => f !== form);
    if (list.length === 0) this.byPrefix.delete(key);
    else this.byPrefix.set(key, list);
  }

  private forgetOldest(): void {
    const oldest = this.secrets.entries().next();
    if (oldest.done) return;
    const [secret, forms] = oldest.value;
    this.secrets.delete(secret);
    for (const form of forms) this.removeForm(form);
    this.chars -= forms.reduce((n, f) => n + f.length, 0);
  }
}

/** The forms a secret takes on its way into a log line or a message, without duplicates. */
function formsOf(secret: string): string[] {
  const forms = new Set<string>([secret]);
  forms.add(JSON.stringify(secret).slice(1, -1));
  // A JSON-escaped form inside a JSON string (a log line quoting an error message that quotes JSON).
  forms.add(JSON.stringify(JSON.stringify(secret).slice(1, -1)).slice(1, -1));
  const base64 = Buffer.from(secret, "utf8").toString("base64");
  forms.add(base64);
  forms.add(base64.replace(/=+$/, ""));
  try {
    forms.add(encodeURIComponent(secret));
  } catch {
    // A lone surrogate cannot be percent-encoded; it cannot be in a URL either.
  }
  return [...forms];
}

/**
 * The agent's registry. Everything that logs or raises an ExecError consults it; everything
 * that receives a secret registers it here.
 */
export const secrets = new Sanitizer();

/** Registers a secret with the agent's registry. */
export function addSecret(secret: string | undefined | null): void {
  secrets.add(secret);
}

/** Scrubs a text with the agent's registry. */
export function sanitize(text: string): string {
  return secrets.sanitize(text);
}
