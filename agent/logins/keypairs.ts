/**
 * The host's SSH key pairs (ImportKeyPair, CreateKeyPair, DescribeKeyPairs,
 * DeleteKeyPairs, ModifyKeyPairAttribute) and which instance each is bound to
 * (AssociateInstancesKeyPairs / DisassociateInstancesKeyPairs bookkeeping). All of it
 * lives in one JSON file under the data directory, rewritten atomically; writes are
 * serialised, and the in-memory copy changes only after the file did.
 *
 * Rules, from reference/seeds-cvm-api.md §1.11 and §2:
 * - KeyName: 1–25 characters of [A-Za-z0-9_], unique on the host.
 * - ProjectId: CreateKeyPair says it must be 0; the host has no other project, so any
 *   other value is InvalidProjectId.NotFound for both actions.
 * - KeyId: `skey-` + 8 lowercase letters or digits.
 * - PublicKey is shown as `<type> <base64> <KeyId>`: the seed's KeyPair example puts
 *   the key ID in the comment, so an imported key's own comment is not kept.
 * - Key types: the seed names OpenSSH RSA only; this store also takes Ed25519 and
 *   ECDSA (P-256/384/521), which every current OpenSSH guest accepts. RSA must have
 *   at least 2048 bits.
 * - CreateKeyPair makes an RSA key (2048 bits unless asked for 4096) and returns the
 *   private key once, as PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`, the form
 *   Tencent returns and OpenSSH reads); it is never written to disk or logged.
 * - Binding keys to an instance REPLACES the keys it had ("if a key was previously
 *   bound, the old key stops working"): after associate(I, K) instance I has exactly K.
 *   Unbinding removes the given keys; keys that were not bound are ignored.
 * - A key bound to an instance cannot be deleted; DeleteKeyPairs is all or nothing.
 * Instance existence, state and OS (Linux only, STOPPED for unbinding) are the caller's
 * checks: this store knows instance IDs only as strings.
 */
import { generateKeyPair as generateKeyPairCb } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Logger } from "pino";
import { z } from "zod";
import { addSecret } from "../../drivers/exec/sanitize.js";
import { isoSeconds, newId } from "../model.js";
import type { DataPaths } from "../paths.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { KeyedLock } from "../util/keyed-lock.js";
import { setAside } from "../util/set-aside.js";
import { loginError } from "./error-codes.js";
import {
  checkBatch,
  checkKeyName,
  checkProjectId,
  DESCRIPTION_MAX,
  INSTANCE_ID,
  KEY_ID,
  KEY_PAIR_FILTERS,
  type KeyPairFilterName,
} from "./keypair-rules.js";
import {
  formatSshPublicKey,
  parseSshPublicKey,
  rsaPublicKeyLine,
  sshFingerprint,
  SshKeyError,
  SUPPORTED_KEY_TYPES,
} from "./openssh.js";

const generateKeyPair = promisify(generateKeyPairCb);

export const DEFAULT_MAX_KEY_PAIRS = 500; // the seed gives no quota; a host-wide cap keeps the file small

/** Where the store lives: `<data dir>/keypairs.json`. */
export function keyPairsFile(paths: DataPaths): string {
  return join(paths.root, "keypairs.json");
}

const recordSchema = z
  .object({
    keyId: z.string().regex(KEY_ID),
    keyName: z.string(),
    projectId: z.number().int(),
    description: z.string(),
    keyType: z.enum(SUPPORTED_KEY_TYPES as [string, ...string[]]),
    publicKey: z.string(),
    fingerprint: z.string(),
    createdTime: z.string(),
  })
  .strict();

const fileSchema = z
  .object({
    version: z.literal(1),
    keyPairs: z.array(recordSchema),
    /** instanceId → key IDs bound to it, in the order they were given. */
    bindings: z.record(z.string(), z.array(z.string())),
  })
  .strict();

export type KeyPairRecord = z.infer<typeof recordSchema>;
type StoreState = z.infer<typeof fileSchema>;

/** The CVM `KeyPair` structure (DescribeKeyPairs). */
export interface KeyPair {
  KeyId: string;
  KeyName: string;
  ProjectId: number;
  Description: string;
  PublicKey: string;
  AssociatedInstanceIds: string[];
  AssociatedInstanceCount: number;
  AssociatedImageCount: number;
  Tags: Array<{ Key: string; Value: string }>;
  CreatedTime: string;
}

/** The CVM `CreateKeyPair` output structure. PrivateKey exists only in this value. */
export interface CreatedKeyPair {
  KeyId: string;
  KeyName: string;
  ProjectId: number;
  PublicKey: string;
  PrivateKey: string;
  AssociatedInstanceCount: number;
  AssociatedImageCount: number;
}

export interface KeyPairFilter {
  name: KeyPairFilterName | string;
  values: string[];
}

/** What one association call changed for one instance. */
export interface BindingChange {
  instanceId: string;
  before: string[];
  after: string[];
}

export interface KeyPairStoreOptions {
  /** The JSON file; normally keyPairsFile(paths). */
  file: string;
  /** Clock for CreatedTime. Default: the system clock. */
  now?: () => Date;
  /** Most key pairs the host holds (InvalidKeyPair.LimitExceeded beyond). Default 500. */
  maxKeyPairs?: number;
  /** Where a store that fails its check is reported (it is set aside). */
  logger?: Pick<Logger, "warn">;
}

export class KeyPairStore {
  private readonly file: string;
  private readonly now: () => Date;
  private readonly maxKeyPairs: number;
  private readonly logger: Pick<Logger, "warn"> | undefined;
  private readonly lock = new KeyedLock();
  private state: Promise<StoreState> | undefined;

  constructor(options: KeyPairStoreOptions) {
    this.file = options.file;
    this.now = options.now ?? (() => new Date());
    this.maxKeyPairs = options.maxKeyPairs ?? DEFAULT_MAX_KEY_PAIRS;
    this.logger = options.logger;
  }

  /** ImportKeyPair: stores a public key under a new KeyId; binds nothing. */
  async importKeyPair(req: { keyName: string; publicKey: string; projectId?: number }): Promise<KeyPair> {
    checkKeyName(req.keyName);
    const projectId = checkProjectId(req.projectId);
    let parsed;
    try {
      parsed = parseSshPublicKey(req.publicKey);
    } catch (error) {
      if (error instanceof SshKeyError) throw loginError("PublicKeyMalformed", `PublicKey ${error.message}`, { cause: error });
      throw error;
    }
    const fingerprint = sshFingerprint(parsed.blob);
    return this.mutate((s) => {
      this.checkRoomFor(s, req.keyName);
      if (s.keyPairs.some((k) => k.fingerprint === fingerprint)) {
        throw loginError("PublicKeyTaken", `a key pair with this public key (${fingerprint}) already exists`);
      }
      const record = this.newRecord(s, {
        keyName: req.keyName,
        projectId,
        keyType: parsed.type,
        line: (keyId) => formatSshPublicKey(parsed.type, parsed.blob, keyId),
        fingerprint,
      });
      s.keyPairs.push(record);
      return toKeyPair(record, s);
    });
  }

  /** CreateKeyPair: a new RSA key pair; the private key is returned here and nowhere else. */
  async createKeyPair(req: { keyName: string; projectId?: number; bits?: 2048 | 4096 }): Promise<CreatedKeyPair> {
    checkKeyName(req.keyName);
    const projectId = checkProjectId(req.projectId);
    const bits = req.bits ?? 2048;
    if (bits !== 2048 && bits !== 4096) throw loginError("BadValue", "the RSA key size must be 2048 or 4096 bits");
    // Fail fast on a taken name before spending time on a key; checked again under the lock.
    this.checkRoomFor(await this.load(), req.keyName);
    const { publicKey, privateKey } = await generateKeyPair("rsa", { modulusLength: bits, publicExponent: 0x10001 });
    const privatePem = privateKey.export({ type: "pkcs1", format: "pem" }).toString();
    addSecret(privatePem); // scrubbed from every log line and command error (sanitize.ts)
    const bare = parseSshPublicKey(rsaPublicKeyLine(publicKey, ""));
    return this.mutate((s) => {
      this.checkRoomFor(s, req.keyName);
      const record = this.newRecord(s, {
        keyName: req.keyName,
        projectId,
        keyType: "ssh-rsa",
        line: (keyId) => rsaPublicKeyLine(publicKey, keyId),
        fingerprint: sshFingerprint(bare.blob),
      });
      s.keyPairs.push(record);
      return {
        KeyId: record.keyId,
        KeyName: record.keyName,
        ProjectId: record.projectId,
        PublicKey: record.publicKey,
        PrivateKey: privatePem,
        AssociatedInstanceCount: 0,
        AssociatedImageCount: 0,
      };
    });
  }

  /**
   * DescribeKeyPairs. KeyIds and Filters exclude each other; unknown KeyIds are left
   * out (the action has no NotFound code). Filters: AND across filters, OR across one
   * filter's values; key-name matches exactly; keys have no tags, so tag-key/tag-value
   * match nothing. Newest first.
   */
  async describeKeyPairs(req: {
    keyIds?: readonly string[];
    filters?: readonly KeyPairFilter[];
    offset?: number;
    limit?: number;
  }): Promise<{ totalCount: number; keyPairSet: KeyPair[] }> {
    const keyIds = req.keyIds ?? [];
    const filters = req.filters ?? [];
    if (keyIds.length > 0 && filters.length > 0) {
      throw loginError("BadCombination", "KeyIds and Filters cannot be given together");
    }
    checkBatch("KeyIds", keyIds, KEY_ID, "KeyPairIdMalformed", "skey-", true);
    for (const f of filters) {
      if (!(KEY_PAIR_FILTERS as readonly string[]).includes(f.name)) {
        throw loginError("BadFilter", `'${f.name}' is not a supported filter; use one of ${KEY_PAIR_FILTERS.join(", ")}`);
      }
    }
    const s = await this.load();
    const wanted = new Set(keyIds);
    const matching = [...s.keyPairs]
      .reverse()
      .filter((k) => (keyIds.length === 0 || wanted.has(k.keyId)) && filters.every((f) => matchesFilter(k, f)));
    const offset = req.offset ?? 0;
    const limit = req.limit ?? 20;
    return {
      totalCount: matching.length,
      keyPairSet: matching.slice(offset, offset + limit).map((k) => toKeyPair(k, s)),
    };
  }

  /** ModifyKeyPairAttribute: rename and/or describe a key pair. */
  async modifyKeyPairAttribute(req: { keyId: string; keyName?: string; description?: string }): Promise<KeyPair> {
    checkBatch("KeyId", [req.keyId], KEY_ID, "KeyPairIdMalformed", "skey-", false);
    if (req.keyName !== undefined) checkKeyName(req.keyName);
    if (req.description !== undefined && [...req.description].length > DESCRIPTION_MAX) {
      throw loginError("TooLong", `Description is longer than ${DESCRIPTION_MAX} characters`);
    }
    return this.mutate((s) => {
      const record = findOrThrow(s, req.keyId);
      if (req.keyName !== undefined && req.keyName !== record.keyName) {
        if (s.keyPairs.some((k) => k.keyName === req.keyName)) {
          throw loginError("KeyPairNameTaken", `a key pair named ${req.keyName} already exists`);
        }
        record.keyName = req.keyName;
      }
      if (req.description !== undefined) record.description = req.description;
      return toKeyPair(record, s);
    });
  }

  /** DeleteKeyPairs: all or nothing; refused while any of the keys is bound to an instance. */
  async deleteKeyPairs(keyIds: readonly string[]): Promise<void> {
    checkBatch("KeyIds", keyIds, KEY_ID, "KeyPairIdMalformed", "skey-", false);
    await this.mutate((s) => {
      const doomed = new Set(keyIds);
      for (const keyId of doomed) {
        findOrThrow(s, keyId);
        const users = instancesOf(s, keyId);
        if (users.length > 0) {
          throw loginError("KeyPairNotSupported",
            `key pair ${keyId} is bound to ${users.join(", ")}; unbind it (DisassociateInstancesKeyPairs) before deleting it`,
          );
        }
      }
      s.keyPairs = s.keyPairs.filter((k) => !doomed.has(k.keyId));
    });
  }

  /** AssociateInstancesKeyPairs bookkeeping: each instance ends up bound to exactly `keyIds`. */
  async associate(instanceIds: readonly string[], keyIds: readonly string[]): Promise<BindingChange[]> {
    checkBatch("InstanceIds", instanceIds, INSTANCE_ID, "InstanceIdMalformed", "ins-", false);
    checkBatch("KeyIds", keyIds, KEY_ID, "KeyPairIdMalformed", "skey-", false);
    const keys = unique(keyIds);
    return this.mutate((s) => {
      for (const keyId of keys) findOrThrow(s, keyId);
      return unique(instanceIds).map((instanceId) => {
        const before = s.bindings[instanceId] ?? [];
        s.bindings[instanceId] = [...keys];
        return { instanceId, before, after: [...keys] };
      });
    });
  }

  /** DisassociateInstancesKeyPairs bookkeeping: removes `keyIds` from each instance. */
  async disassociate(instanceIds: readonly string[], keyIds: readonly string[]): Promise<BindingChange[]> {
    checkBatch("InstanceIds", instanceIds, INSTANCE_ID, "InstanceIdMalformed", "ins-", false);
    checkBatch("KeyIds", keyIds, KEY_ID, "KeyPairIdMalformed", "skey-", false);
    const removed = new Set(keyIds);
    return this.mutate((s) => {
      for (const keyId of removed) findOrThrow(s, keyId);
      return unique(instanceIds).map((instanceId) => {
        const before = s.bindings[instanceId] ?? [];
        const after = before.filter((k) => !removed.has(k));
        if (after.length > 0) s.bindings[instanceId] = after;
        else delete s.bindings[instanceId];
        return { instanceId, before, after };
      });
    });
  }

  /** Drops every binding of these instances (after TerminateInstances). */
  async forgetInstances(instanceIds: readonly string[]): Promise<void> {
    await this.mutate((s) => {
      for (const id of instanceIds) delete s.bindings[id];
    });
  }

  /** The keys bound to an instance, for its cloud-init `public_keys`. */
  async keysOfInstance(instanceId: string): Promise<KeyPairRecord[]> {
    const s = await this.load();
    return (s.bindings[instanceId] ?? []).flatMap((keyId) => s.keyPairs.filter((k) => k.keyId === keyId)).map((k) => ({ ...k }));
  }

  /** One key pair's full record (with its SHA256 fingerprint), or undefined. */
  async get(keyId: string): Promise<KeyPairRecord | undefined> {
    const found = (await this.load()).keyPairs.find((k) => k.keyId === keyId);
    return found && { ...found };
  }

  // --- internals -----------------------------------------------------------

  private load(): Promise<StoreState> {
    this.state ??= this.readFile();
    // A failed read is not remembered, so a later call tries again.
    this.state.catch(() => (this.state = undefined));
    return this.state;
  }

  private async readFile(): Promise<StoreState> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, keyPairs: [], bindings: {} };
      throw error;
    }
    let reason: string;
    try {
      const parsed = fileSchema.safeParse(JSON.parse(text));
      if (parsed.success) return parsed.data;
      reason = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(file)"}: ${i.message}`).join("; ");
    } catch (error) {
      reason = `not JSON: ${(error as Error).message}`;
    }
    // A store that fails its check is set aside for the operator, never a stuck agent: the
    // host goes on with no key pairs (instances keep the keys their guests already have).
    const aside = await setAside(this.file);
    this.logger?.warn({ file: this.file, aside, reason }, "key pair store unreadable; set aside, starting with no key pairs");
    return { version: 1, keyPairs: [], bindings: {} };
  }

  /** Runs `change` on a copy of the state, writes the copy, then makes it current. One at a time. */
  private mutate<T>(change: (draft: StoreState) => T): Promise<T> {
    return this.lock.run("store", async () => {
      const draft = structuredClone(await this.load());
      const result = change(draft);
      await writeFileAtomic(this.file, `${JSON.stringify(draft, null, 2)}\n`);
      this.state = Promise.resolve(draft);
      return result;
    });
  }

  private checkRoomFor(s: StoreState, keyName: string): void {
    if (s.keyPairs.some((k) => k.keyName === keyName)) {
      throw loginError("KeyPairNameTaken", `a key pair named ${keyName} already exists`);
    }
    if (s.keyPairs.length >= this.maxKeyPairs) {
      throw loginError("KeyPairLimit", `this host already holds ${this.maxKeyPairs} key pairs`);
    }
  }

  private newRecord(
    s: StoreState,
    k: { keyName: string; projectId: number; keyType: KeyPairRecord["keyType"]; line: (keyId: string) => string; fingerprint: string },
  ): KeyPairRecord {
    let keyId = newId("skey");
    while (s.keyPairs.some((r) => r.keyId === keyId)) keyId = newId("skey");
    return {
      keyId,
      keyName: k.keyName,
      projectId: k.projectId,
      description: "",
      keyType: k.keyType,
      publicKey: k.line(keyId),
      fingerprint: k.fingerprint,
      createdTime: isoSeconds(this.now()),
    };
  }
}

function findOrThrow(s: StoreState, keyId: string): KeyPairRecord {
  const record = s.keyPairs.find((k) => k.keyId === keyId);
  if (!record) throw loginError("KeyPairNotFound", `key pair ${keyId} does not exist`);
  return record;
}

function instancesOf(s: StoreState, keyId: string): string[] {
  return Object.entries(s.bindings)
    .filter(([, keys]) => keys.includes(keyId))
    .map(([instanceId]) => instanceId)
    .sort();
}

function matchesFilter(k: KeyPairRecord, f: KeyPairFilter): boolean {
  switch (f.name) {
    case "key-id":
      return f.values.includes(k.keyId);
    case "key-name":
      return f.values.includes(k.keyName);
    case "project-id":
      return f.values.includes(String(k.projectId));
    default: // tag-key, tag-value: key pairs carry no tags here
      return false;
  }
}

function toKeyPair(k: KeyPairRecord, s: StoreState): KeyPair {
  const instances = instancesOf(s, k.keyId);
  return {
    KeyId: k.keyId,
    KeyName: k.keyName,
    ProjectId: k.projectId,
    Description: k.description,
    PublicKey: k.publicKey,
    AssociatedInstanceIds: instances,
    AssociatedInstanceCount: instances.length,
    AssociatedImageCount: 0,
    Tags: [],
    CreatedTime: k.createdTime,
  };
}

function unique(ids: readonly string[]): string[] {
  return [...new Set(ids)];
}
