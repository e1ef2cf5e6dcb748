/**
 * The API credentials an agent without configured ones makes for itself:
 * <data_dir>/api-credentials.json, {"secret_id", "secret_key"}, mode 0600.
 *
 * A missing file is created (never over another: the new file is linked into place, so a
 * file that appeared meanwhile wins). A file that exists but cannot be read, is not JSON or
 * does not hold a pair stops the agent with a message naming the file and what is wrong;
 * it is never overwritten (a controller may hold the pair it held). The messages never
 * quote the file's content: it is a secret.
 */
import { randomBytes } from "node:crypto";
import { link, open, readFile, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { syncDir } from "./util/atomic-file.js";

export interface StoredCredential {
  secretId: string;
  secretKey: string;
}

/** The credentials file exists but is unusable; the agent must not start (one line). */
export class CredentialsFileError extends Error {
  override readonly name = "CredentialsFileError";
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`the API credentials file ${file} ${problem}; the agent does not start and never overwrites it: repair or remove it, or configure secret_id and secret_key`);
  }
}

/** Reads the pair from `file`; undefined when the file does not exist. */
export async function readCredentialsFile(file: string): Promise<StoredCredential | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new CredentialsFileError(file, `cannot be read (${code ?? String(error)})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // JSON.parse's message may quote the text: the secret. Say only that it is not JSON.
    throw new CredentialsFileError(file, "is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CredentialsFileError(file, 'does not hold a JSON object {"secret_id", "secret_key"}');
  }
  const { secret_id: secretId, secret_key: secretKey } = parsed as Record<string, unknown>;
  for (const [field, value] of [["secret_id", secretId], ["secret_key", secretKey]] as const) {
    if (typeof value !== "string" || value === "") throw new CredentialsFileError(file, `has no non-empty string "${field}"`);
  }
  return { secretId: secretId as string, secretKey: secretKey as string };
}

/**
 * The pair in `file`, or a new one written there when the file does not exist.
 * `created` says which (the caller tells the operator where a new pair is).
 */
export async function loadOrCreateCredentials(file: string): Promise<{ credential: StoredCredential; created: boolean }> {
  const existing = await readCredentialsFile(file);
  if (existing) return { credential: existing, created: false };
  const credential = { secretId: `AKID${randomBytes(16).toString("hex")}`, secretKey: randomBytes(24).toString("base64url") };
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${randomBytes(4).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(JSON.stringify({ secret_id: credential.secretId, secret_key: credential.secretKey }, null, 1) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, file); // EEXIST when another file appeared meanwhile: that one is kept
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const theirs = await readCredentialsFile(file);
    if (!theirs) throw error;
    return { credential: theirs, created: false };
  } finally {
    await rm(tmp, { force: true });
  }
  await syncDir(dir);
  return { credential, created: true };
}
