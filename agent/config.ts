/**
 * The agent's configuration: one schema, every key with its default and unit,
 * validated once at start, frozen, passed down. Nothing else reads process.env.
 *
 * Precedence: defaults < JSON file < environment variables CDH_AGENT_<KEY>.
 * The file uses the snake_case keys below; the result (AgentConfig) uses
 * camelCase names and parsed values (api_listen → apiListen: {host, port}, the
 * secret_id/secret_key pair merged into credentials, host_id derived when unset).
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { validate as validateCron } from "node-cron";
import { z } from "zod";
import { intToIp, ipToInt, isIpv4, parseCidr, type Subnet } from "./network/subnets.js";
import { isLoopbackHost } from "./api/tls.js";

export const DEFAULT_CONFIG_FILE = "/etc/cdh-agent/config.json";
export const ENV_PREFIX = "CDH_AGENT_";

const HOST_ID_RE = /^host-[a-z0-9]{8}$/;
/** libvirt object names: keep to a conservative, shell- and XML-safe set. */
const LIBVIRT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const TIB = 1024 ** 4;

const subnetSchema = z
  .object({
    subnet_id: z.string().regex(/^subnet-[a-z0-9]{1,32}$/, 'must be "subnet-" followed by lowercase letters or digits'),
    vpc_id: z.string().regex(/^vpc-[a-z0-9]{1,32}$/, 'must be "vpc-" followed by lowercase letters or digits'),
    network: z.string().regex(LIBVIRT_NAME_RE, "must be a libvirt network name"),
    bridge: z.string().regex(/^[a-zA-Z0-9_-]{1,15}$/, "must be a bridge device name (at most 15 characters)"),
    cidr: z.string(),
    gateway: z.string().optional(),
    dns: z.array(z.string()).optional(),
  })
  .strict();

const storagePoolSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, "must be lowercase letters, digits, - or _ (at most 32)"),
    path: z.string().startsWith("/", "must be an absolute path"),
    disk_type: z.enum(["LOCAL_BASIC", "LOCAL_SSD"]),
    size_gib: z.number().int().positive().optional(),
    iops: z.number().int().nonnegative().optional(),
    throughput_mbps: z.number().int().nonnegative().optional(),
  })
  .strict();

const credentialSchema = z
  .object({
    secret_id: z.string().min(1, "secret_id must not be empty"),
    secret_key: z.string().min(1, "secret_key must not be empty"),
  })
  .strict();

const seconds = () => z.number().int().positive();

/**
 * Every key, its default (the one place defaults live) and its unit.
 * `.describe()` texts are what env.example and the README document.
 */
export const configSchema = z
  .object({
    /** Directory for disks, config drives, images and the journal. */
    data_dir: z.string().startsWith("/", "must be an absolute path").default("/var/lib/cdh-agent")
      .describe("directory for disks, config drives, images and the journal (absolute path)"),
    /** Address of the controller API, "host:port" or "[ipv6]:port". */
    api_listen: z.string().default("127.0.0.1:8620")
      .describe("address of the controller API, host:port or [ipv6]:port"),
    /** PEM certificate (chain) of the API; with api_tls_key the API speaks HTTPS. */
    api_tls_cert: z.string().startsWith("/", "must be an absolute path").optional()
      .describe("PEM certificate chain of the controller API (absolute path); with api_tls_key the API is HTTPS; reloaded on SIGHUP"),
    /** PEM private key of the API. */
    api_tls_key: z.string().startsWith("/", "must be an absolute path").optional()
      .describe("PEM private key of the controller API (absolute path); reloaded on SIGHUP"),
    /** PEM CA certificates a controller's client certificate must chain to (mutual TLS). */
    api_tls_client_ca: z.string().startsWith("/", "must be an absolute path").optional()
      .describe("PEM CA certificates for mutual TLS (absolute path): the controller must present a certificate this CA signed; reloaded on SIGHUP"),
    /** Plain HTTP on a non-loopback api_listen (signatures, passwords and private keys in clear). */
    api_allow_plain_http: z.boolean().default(false)
      .describe("allow plain HTTP when api_listen is not a loopback address (true/false); without TLS the agent otherwise refuses to start"),
    /** Open API connections at once. */
    api_max_connections: z.number().int().positive().default(256)
      .describe("open connections to the controller API at once (connections); more get RequestLimitExceeded"),
    /** Open API connections at once from one address. */
    api_max_connections_per_source: z.number().int().positive().default(64)
      .describe("open connections to the controller API at once from one remote address (connections)"),
    /** Bytes of request bodies read but not yet verified, all connections together. */
    api_unverified_body_budget_bytes: z.number().int().min(1_048_576).default(16 * 1024 * 1024)
      .describe("bytes of API request bodies being received and not yet verified, all connections together (bytes, >= 1048576); past it RequestLimitExceeded"),
    /** One credential pair (SecretId); both of secret_id/secret_key or neither. */
    secret_id: z.string().min(1, "must not be empty").optional()
      .describe("SecretId of one API credential pair (with secret_key)"),
    /** One credential pair (SecretKey). */
    secret_key: z.string().min(1, "must not be empty").optional()
      .describe("SecretKey of one API credential pair (with secret_id)"),
    /** More credential pairs; merged with the pair above. */
    credentials: z.array(credentialSchema).default([])
      .describe('more credential pairs, JSON array of {"secret_id","secret_key"}'),
    /** libvirt connection URI. */
    libvirt_uri: z.string().min(1, "must not be empty").default("qemu:///system")
      .describe("libvirt connection URI"),
    /** Domain type: kvm, qemu (TCG) or auto (kvm when /dev/kvm is usable by QEMU, else qemu with a warning). */
    virt_type: z.enum(["kvm", "qemu", "auto"]).default("auto")
      .describe("domain type: kvm, qemu (TCG) or auto (kvm when /dev/kvm is usable by QEMU, else qemu with a warning)"),
    /** This host's ID, "host-" + 8 lowercase alphanumerics; derived from /etc/machine-id when unset. */
    host_id: z.string().regex(HOST_ID_RE, 'must be "host-" followed by 8 lowercase letters or digits').optional()
      .describe("this host's ID (host-xxxxxxxx); derived from /etc/machine-id when unset"),
    /** Controller base URL for reports; "" = no controller (reports are only logged). */
    controller_url: z.string().default("")
      .describe('controller URL for reports (http or https); empty = reports are only logged'),
    /** node-cron expression (with a seconds field) for scheduled reports. */
    report_schedule: z.string().default("*/30 * * * * *")
      .describe("node-cron expression (6 fields, with seconds) for scheduled reports"),
    /** Timeout of one report request, milliseconds. */
    report_timeout_ms: z.number().int().positive().default(5000)
      .describe("timeout of one report request (milliseconds)"),
    /** CPU cores kept for the host. */
    reserved_cpu: z.number().int().nonnegative().default(0)
      .describe("CPU cores kept for the host (cores)"),
    /** Memory kept for the host, GiB. */
    reserved_memory_gib: z.number().nonnegative().default(1)
      .describe("memory kept for the host (GiB)"),
    /** Disk kept for the host on the data directory's filesystem, GiB. */
    reserved_disk_gib: z.number().nonnegative().default(10)
      .describe("disk kept for the host on the data directory's filesystem (GiB)"),
    /** vCPUs sold per physical core (ratio, > 0, ≤ 16). */
    cpu_allocation_ratio: z.number().positive().max(16).default(1.0)
      .describe("vCPUs per host core (ratio, > 0 and <= 16)"),
    /** Guest memory per host memory (ratio, > 0, ≤ 16). */
    memory_allocation_ratio: z.number().positive().max(16).default(1.0)
      .describe("guest memory per host memory (ratio, > 0 and <= 16)"),
    /** Launches that make disks and define and start domains at once; the rest wait PENDING. 0 = four per host core (4 to 32). */
    launch_concurrency: z.number().int().nonnegative().max(256).default(0)
      .describe("launches run at once on this host (instances); the others wait in order, PENDING; 0 = four per host core, at least 4, at most 32"),
    /** How long a soft stop waits for the guest before it fails (or goes hard), seconds. */
    soft_stop_timeout_s: seconds().default(60)
      .describe("how long a soft stop waits for the guest (seconds)"),
    /** Interval between ACPI shutdown requests during a soft stop, seconds. */
    soft_stop_retry_s: seconds().default(10)
      .describe("interval between repeated ACPI shutdown requests during a soft stop (seconds)"),
    /** Interval of the full reconcile with libvirt, seconds. */
    reconcile_interval_s: seconds().default(60)
      .describe("interval of the full reconcile with libvirt (seconds)"),
    /** Interval of the liveness probe of libvirtd (a frozen libvirtd makes every state UNKNOWN), seconds. */
    libvirt_probe_interval_s: seconds().default(5)
      .describe("interval of the liveness probe of libvirtd (seconds); while it goes unanswered every state is UNKNOWN"),
    /** How long the liveness probe waits for libvirtd, seconds. */
    libvirt_probe_timeout_s: seconds().default(10)
      .describe("how long the liveness probe of libvirtd waits for an answer (seconds)"),
    /** pino log level. */
    log_level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info")
      .describe("log level: trace, debug, info, warn, error, fatal or silent"),
    /** libvirt network for NICs until subnets arrive. */
    default_network: z.string().regex(LIBVIRT_NAME_RE, "must be a libvirt network name").default("cdh-default")
      .describe("libvirt network for instance NICs"),
    /** Reported Placement.Zone. */
    host_zone: z.string().min(1, "must not be empty").default("zone-1")
      .describe("zone reported as Placement.Zone"),
    /** Timeout of one image download, seconds. */
    image_download_timeout_s: seconds().default(3600)
      .describe("timeout of one image download (seconds)"),
    /** Largest accepted image, bytes (default 1 TiB). */
    max_image_bytes: z.number().int().positive().default(TIB)
      .describe("largest accepted image (bytes)"),
    /** Guest subnets; empty = one isolated subnet on default_network (10.201.0.0/24). */
    subnets: z.array(subnetSchema).default([])
      .describe('guest subnets, JSON array of {"subnet_id","vpc_id","network","bridge","cidr","gateway"?,"dns"?}; empty = one isolated subnet 10.201.0.0/24 on default_network'),
    /** Port the metadata endpoint listens on at each subnet's gateway (guests use 80 through a redirect). */
    metadata_port: z.number().int().min(1).max(65535).default(8775)
      .describe("port of the metadata endpoint on each subnet gateway; guests reach it at 169.254.169.254:80 and 169.254.0.23:80"),
    /** The agent's own nftables table (ip family) for the metadata redirect; replaced whole at start. */
    metadata_nft_table: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, "must be an nftables table name (a letter, then letters, digits or _)").default("cdh_metadata")
      .describe("the agent's own nftables table (ip family) for the metadata redirect, replaced whole at start; two agents in one network namespace need two names"),
    /** Require IMDSv2 session tokens on every metadata request. */
    metadata_require_token: z.boolean().default(false)
      .describe("require IMDSv2 session tokens on every metadata request (true/false)"),
    /** Open metadata connections at once, per listener. */
    metadata_max_connections: z.number().int().positive().default(4096)
      .describe("open connections to the metadata endpoint at once, per subnet listener (connections); more get 503"),
    /** Open metadata connections at once from one guest address. */
    metadata_max_connections_per_source: z.number().int().positive().default(128)
      .describe("open connections to the metadata endpoint at once from one guest address (connections); more get 503"),
    /** Live IMDSv2 tokens, all guests together. */
    metadata_max_tokens: z.number().int().positive().default(65_536)
      .describe("live IMDSv2 session tokens, all guests together (tokens); past it a token PUT gets 503"),
    /** NTP servers given to guests. */
    ntp_servers: z.array(z.string().min(1)).default([])
      .describe("NTP servers given to guests, JSON array of host names or addresses"),
    /** Region name guests see in their metadata. */
    region: z.string().min(1, "must not be empty").default("local")
      .describe("region name guests see in their metadata"),
    /** Local disk pools; empty = one LOCAL_BASIC pool "local" at <data_dir>/pools/local. */
    storage_pools: z.array(storagePoolSchema).default([])
      .describe('local disk pools, JSON array of {"name","path","disk_type" (LOCAL_BASIC or LOCAL_SSD),"size_gib"?,"iops"?,"throughput_mbps"?}; empty = one LOCAL_BASIC pool "local" at <data_dir>/pools/local, as large as its filesystem'),
    /** How local disk data is discarded when a disk is deleted (degaussing). */
    disk_wipe: z.enum(["zero", "discard", "none"]).default("discard")
      .describe("how a deleted disk's data is destroyed: zero (overwrite with zeros, then delete), discard (punch out every block so the filesystem and device drop them, then delete) or none"),
    /** node-cron schedule of the inventory sweep (orphaned files and domains). */
    inventory_sweep_schedule: z.string().default("0 */10 * * * *")
      .describe("node-cron expression (6 fields) of the inventory sweep that finds orphaned disk files and domains"),
    /** How long an orphan stays in quarantine before the sweep deletes it, seconds. */
    orphan_grace_period_s: z.number().int().nonnegative().default(86400)
      .describe("how long an orphaned disk file stays in quarantine before the sweep deletes it (seconds)"),
    /** node-cron schedule of the image cache sweep (base files no image and no disk uses). */
    image_cache_sweep_schedule: z.string().default("0 */15 * * * *")
      .describe("node-cron expression (6 fields) of the image cache sweep that deletes base image files no image record names and no disk's backing chain contains"),
    /** The rescue system's kernel (scripts/build-rescue-image.sh). */
    rescue_kernel: z.string().startsWith("/", "must be an absolute path").default("/var/lib/cdh-agent/rescue/rescue-vmlinuz")
      .describe("kernel of the rescue system that EnterRescueMode boots (absolute path; built by scripts/build-rescue-image.sh)"),
    /** The rescue system's initramfs. */
    rescue_initrd: z.string().startsWith("/", "must be an absolute path").default("/var/lib/cdh-agent/rescue/rescue-initrd.gz")
      .describe("initramfs of the rescue system (absolute path; built by scripts/build-rescue-image.sh)"),
    /** Test-only fault injection: the agent exits with SIGKILL at this named point. */
    fail_point: z.string().regex(/^[a-z:-]*$/, "must be a fail point name such as create:domain-defined").default("")
      .describe("test-only fault injection: the agent kills itself at this point (empty = off)"),
  })
  .strict();

export type ConfigKey = keyof typeof configSchema.shape;
/** Every key, in schema order (the README and env.example document each). */
export const CONFIG_KEYS = Object.freeze(Object.keys(configSchema.shape) as ConfigKey[]);

/** "data_dir" → "CDH_AGENT_DATA_DIR". */
export function envVarName(key: ConfigKey): string {
  return ENV_PREFIX + key.toUpperCase();
}

export interface Credential {
  readonly secretId: string;
  readonly secretKey: string;
}

export interface AgentConfig {
  readonly dataDir: string;
  readonly apiListen: { readonly host: string; readonly port: number };
  /** HTTPS (and mutual TLS with clientCaFile); absent = plain HTTP. */
  readonly apiTls?: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile?: string };
  readonly apiMaxConnections: number;
  readonly apiMaxConnectionsPerSource: number;
  readonly apiUnverifiedBodyBudgetBytes: number;
  readonly credentials: readonly Credential[];
  readonly libvirtUri: string;
  readonly virtType: "kvm" | "qemu" | "auto";
  readonly hostId: string;
  readonly controllerUrl: string;
  readonly reportSchedule: string;
  readonly reportTimeoutMs: number;
  readonly reservedCpu: number;
  readonly reservedMemoryGib: number;
  readonly reservedDiskGib: number;
  readonly cpuAllocationRatio: number;
  readonly memoryAllocationRatio: number;
  /** 0 = derived from the host's cores (see instances/launch-queue.ts). */
  readonly launchConcurrency: number;
  readonly softStopTimeoutS: number;
  readonly softStopRetryS: number;
  readonly reconcileIntervalS: number;
  readonly libvirtProbeIntervalS: number;
  readonly libvirtProbeTimeoutS: number;
  readonly logLevel: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
  readonly defaultNetwork: string;
  readonly hostZone: string;
  readonly imageDownloadTimeoutS: number;
  readonly maxImageBytes: number;
  readonly failPoint: string;
  readonly subnets: readonly Subnet[];
  readonly metadataPort: number;
  readonly metadataNftTable: string;
  readonly metadataRequireToken: boolean;
  readonly metadataMaxConnections: number;
  readonly metadataMaxConnectionsPerSource: number;
  readonly metadataMaxTokens: number;
  readonly ntpServers: readonly string[];
  readonly region: string;
  readonly storagePools: readonly StoragePoolConfig[];
  readonly diskWipe: "zero" | "discard" | "none";
  readonly inventorySweepSchedule: string;
  readonly orphanGracePeriodS: number;
  readonly imageCacheSweepSchedule: string;
  readonly rescueKernel: string;
  readonly rescueInitrd: string;
}

/** One local disk pool: a directory holding disk files of one disk type. */
export interface StoragePoolConfig {
  readonly name: string;
  readonly path: string;
  readonly diskType: "LOCAL_BASIC" | "LOCAL_SSD";
  /** Capacity limit, GiB; absent = the filesystem's size. */
  readonly sizeGiB?: number;
  /** Per-disk IO limits (0 = unlimited). */
  readonly iops: number;
  readonly throughputMBps: number;
}

/** Per-disk IO limits by disk type, when a pool does not set its own (0 = unlimited). */
export const DEFAULT_IO_LIMITS: Readonly<Record<"LOCAL_BASIC" | "LOCAL_SSD", { iops: number; throughputMBps: number }>> = Object.freeze({
  LOCAL_BASIC: { iops: 2000, throughputMBps: 150 },
  LOCAL_SSD: { iops: 20000, throughputMBps: 500 },
});

export interface ConfigProblem {
  /** The config key (snake_case), or "" for a problem with the file itself. */
  key: string;
  /** Where the value came from: "default", "file /path", "environment variable CDH_AGENT_X". */
  source: string;
  message: string;
}

/** Every configuration problem; the message names each key, its source and what was wrong. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly problems: readonly ConfigProblem[];
  /** The first problem's key (convenience). */
  readonly key: string;

  constructor(problems: ConfigProblem[], options?: { cause?: unknown }) {
    const lines = problems.map((p) =>
      p.key ? `config key "${p.key}" (from ${p.source}): ${p.message}` : `${p.source}: ${p.message}`,
    );
    super(lines.length === 1 ? lines[0]! : `invalid configuration:\n  ${lines.join("\n  ")}`, options);
    this.problems = problems;
    this.key = problems[0]?.key ?? "";
  }
}

/** "host-" + 8 base36 characters from sha256 of the machine id (surrounding whitespace ignored). */
export function deriveHostId(machineId: string): string {
  const id = machineId.trim();
  if (id === "") throw new Error("cannot derive a host ID from an empty machine id");
  const digest = createHash("sha256").update(id).digest();
  const n = digest.readBigUInt64BE(0) % 36n ** 8n;
  return "host-" + n.toString(36).padStart(8, "0");
}

export interface LoadConfigOptions {
  /** Config file path; default /etc/cdh-agent/config.json (which may be missing). */
  file?: string;
  env: Record<string, string | undefined>;
  /** Returns the file's text, or undefined when it does not exist. Default: fs. */
  readFile?: (path: string) => string | undefined;
  /** Contents of /etc/machine-id; used to derive host_id when it is not set. */
  machineId?: string;
}

function defaultReadFile(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

type Kind = "string" | "number" | "boolean" | "json";

function kindOf(schema: z.ZodTypeAny): Kind {
  let s: z.ZodTypeAny = schema;
  for (;;) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodTypeAny;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodTypeAny;
    else break;
  }
  if (s instanceof z.ZodNumber) return "number";
  if (s instanceof z.ZodBoolean) return "boolean";
  if (s instanceof z.ZodString || s instanceof z.ZodEnum) return "string";
  return "json";
}

const NUMBER_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function coerceEnv(kind: Kind, raw: string): { ok: true; value: unknown } | { ok: false; message: string } {
  const text = raw.trim();
  switch (kind) {
    case "string":
      return { ok: true, value: raw };
    case "number":
      if (!NUMBER_RE.test(text)) return { ok: false, message: `expected a number, got ${JSON.stringify(raw)}` };
      return { ok: true, value: Number(text) };
    case "boolean":
      if (/^(true|1|yes)$/i.test(text)) return { ok: true, value: true };
      if (/^(false|0|no)$/i.test(text)) return { ok: true, value: false };
      return { ok: false, message: `expected true or false, got ${JSON.stringify(raw)}` };
    case "json":
      try {
        return { ok: true, value: JSON.parse(text) };
      } catch (err) {
        return { ok: false, message: `expected JSON: ${(err as Error).message}` };
      }
  }
}

function describeIssue(issue: z.ZodIssue): string {
  const where = issue.path.length > 0 ? `at ${issue.path.join(".")}: ` : "";
  return where + issue.message;
}

/** "[::1]:8620" → {host: "::1", port: 8620}; "0.0.0.0:80" → {host: "0.0.0.0", port: 80}. */
function parseListen(value: string): { host: string; port: number } | string {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:[\]]+):(\d+)$/.exec(value);
  if (!m) return `expected host:port or [ipv6]:port, got ${JSON.stringify(value)}`;
  const host = m[1]!;
  const port = Number(m[2]);
  if (value.startsWith("[") && isIP(host) !== 6) return `${JSON.stringify(host)} is not an IPv6 address`;
  if (!value.startsWith("[") && isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
    return `${JSON.stringify(host)} is not an IP address or host name`;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port ${m[2]} is not in 1..65535`;
  return { host, port };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

type RawConfig = z.infer<typeof configSchema>;

/** Reads, merges and validates the configuration. Throws ConfigError naming every bad key. */
export function loadConfig(options: LoadConfigOptions): AgentConfig {
  const readFile = options.readFile ?? defaultReadFile;
  const filePath = options.file ?? DEFAULT_CONFIG_FILE;
  const fileSource = `file ${filePath}`;
  const problems: ConfigProblem[] = [];

  // 1. The file (a missing default file is fine; a missing explicit file is not).
  let fileValues: Record<string, unknown> = {};
  let text: string | undefined;
  try {
    text = readFile(filePath);
  } catch (err) {
    throw new ConfigError([{ key: "", source: fileSource, message: `cannot read: ${(err as Error).message}` }], { cause: err });
  }
  if (text === undefined && options.file !== undefined) {
    throw new ConfigError([{ key: "", source: fileSource, message: "does not exist" }]);
  }
  if (text !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError([{ key: "", source: fileSource, message: `is not valid JSON: ${(err as Error).message}` }], { cause: err });
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ConfigError([{ key: "", source: fileSource, message: "must hold a JSON object" }]);
    }
    fileValues = parsed as Record<string, unknown>;
    for (const key of Object.keys(fileValues)) {
      if (!(CONFIG_KEYS as readonly string[]).includes(key)) {
        problems.push({ key, source: fileSource, message: `unknown key (known keys: ${CONFIG_KEYS.join(", ")})` });
      }
    }
  }

  // 2. The environment: unknown CDH_AGENT_* variables are errors.
  const envNames = new Map(CONFIG_KEYS.map((k) => [envVarName(k), k] as const));
  for (const name of Object.keys(options.env)) {
    if (name.startsWith(ENV_PREFIX) && !envNames.has(name) && options.env[name] !== undefined) {
      problems.push({ key: "", source: `environment variable ${name}`, message: "unknown variable (no such config key)" });
    }
  }

  // 3. Each key: env > file > default, validated by its own schema so errors name their source.
  const raw: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  for (const key of CONFIG_KEYS) {
    const schema = configSchema.shape[key] as z.ZodTypeAny;
    const envName = envVarName(key);
    const envValue = options.env[envName];
    let value: unknown;
    let source = "default";
    if (envValue !== undefined && !(envValue === "" && schema instanceof z.ZodOptional)) {
      source = `environment variable ${envName}`;
      const coerced = coerceEnv(kindOf(schema), envValue);
      if (!coerced.ok) {
        problems.push({ key, source, message: coerced.message });
        continue;
      }
      value = coerced.value;
    } else if (Object.hasOwn(fileValues, key)) {
      source = fileSource;
      value = fileValues[key];
    }
    sources[key] = source;
    const result = schema.safeParse(value);
    if (!result.success) {
      for (const issue of result.error.issues) problems.push({ key, source, message: describeIssue(issue) });
      continue;
    }
    raw[key] = result.data;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const cfg = raw as RawConfig;
  const at = (key: ConfigKey) => sources[key] ?? "default";

  // 4. Checks that need more than one key or more than a schema.
  const listen = parseListen(cfg.api_listen);
  if (typeof listen === "string") problems.push({ key: "api_listen", source: at("api_listen"), message: listen });
  if ((cfg.api_tls_cert === undefined) !== (cfg.api_tls_key === undefined)) {
    const missing = cfg.api_tls_cert === undefined ? "api_tls_cert" : "api_tls_key";
    const present = missing === "api_tls_cert" ? "api_tls_key" : "api_tls_cert";
    problems.push({ key: missing, source: at(present), message: `${present} is set but ${missing} is not: set both or neither` });
  }
  if (cfg.api_tls_client_ca !== undefined && cfg.api_tls_cert === undefined) {
    problems.push({ key: "api_tls_client_ca", source: at("api_tls_client_ca"), message: "mutual TLS needs api_tls_cert and api_tls_key too" });
  }
  if (typeof listen !== "string" && cfg.api_tls_cert === undefined && !cfg.api_allow_plain_http && !isLoopbackHost(listen.host)) {
    problems.push({
      key: "api_listen",
      source: at("api_listen"),
      message:
        `${listen.host} is not a loopback address and the API has no TLS: signed requests (replayable for 300 s), passwords ` +
        "and private keys would cross the network in clear; set api_tls_cert and api_tls_key, or api_allow_plain_http true",
    });
  }

  if (cfg.controller_url !== "") {
    let ok = false;
    try {
      const url = new URL(cfg.controller_url);
      ok = url.protocol === "http:" || url.protocol === "https:";
    } catch {
      ok = false;
    }
    if (!ok) {
      problems.push({ key: "controller_url", source: at("controller_url"), message: `must be an http(s) URL or empty, got ${JSON.stringify(cfg.controller_url)}` });
    }
  }

  if (!validateCron(cfg.image_cache_sweep_schedule)) {
    problems.push({ key: "image_cache_sweep_schedule", source: at("image_cache_sweep_schedule"), message: `not a valid node-cron expression: ${JSON.stringify(cfg.image_cache_sweep_schedule)}` });
  }
  if (!validateCron(cfg.inventory_sweep_schedule)) {
    problems.push({ key: "inventory_sweep_schedule", source: at("inventory_sweep_schedule"), message: `not a valid node-cron expression: ${JSON.stringify(cfg.inventory_sweep_schedule)}` });
  }
  const poolInputs = cfg.storage_pools.length > 0
    ? cfg.storage_pools
    : [{ name: "local", path: `${cfg.data_dir.replace(/\/+$/, "")}/pools/local`, disk_type: "LOCAL_BASIC" as const }];
  const storagePools: StoragePoolConfig[] = [];
  poolInputs.forEach((input, i) => {
    const clash = storagePools.find((p) => p.name === input.name || p.path === input.path);
    if (clash) {
      problems.push({ key: "storage_pools", source: at("storage_pools"), message: `storage_pools[${i}]: name or path repeats pool ${clash.name}` });
      return;
    }
    const limits = DEFAULT_IO_LIMITS[input.disk_type];
    storagePools.push({
      name: input.name,
      path: input.path.replace(/\/+$/, ""),
      diskType: input.disk_type,
      ...("size_gib" in input && input.size_gib !== undefined ? { sizeGiB: input.size_gib } : {}),
      iops: ("iops" in input ? input.iops : undefined) ?? limits.iops,
      throughputMBps: ("throughput_mbps" in input ? input.throughput_mbps : undefined) ?? limits.throughputMBps,
    });
  });

  if (!validateCron(cfg.report_schedule)) {
    problems.push({ key: "report_schedule", source: at("report_schedule"), message: `not a valid node-cron expression: ${JSON.stringify(cfg.report_schedule)}` });
  }

  if ((cfg.secret_id === undefined) !== (cfg.secret_key === undefined)) {
    const missing = cfg.secret_id === undefined ? "secret_id" : "secret_key";
    const present = missing === "secret_id" ? "secret_key" : "secret_id";
    problems.push({ key: missing, source: at(present), message: `${present} is set but ${missing} is not: set both or neither` });
  }
  const subnets: Subnet[] = [];
  const subnetInputs = cfg.subnets.length > 0
    ? cfg.subnets
    : [{ subnet_id: "subnet-default", vpc_id: "vpc-default", network: cfg.default_network, bridge: "cdhbr0", cidr: "10.201.0.0/24" }];
  subnetInputs.forEach((input, i) => {
    const where = (what: string) => `subnets[${i}].${what}`;
    const cidr = parseCidr(input.cidr);
    if (typeof cidr === "string") {
      problems.push({ key: "subnets", source: at("subnets"), message: `${where("cidr")}: ${cidr}` });
      return;
    }
    const gateway = input.gateway ?? intToIp(ipToInt(cidr.address) + 1);
    const size = 2 ** (32 - cidr.prefixLength);
    const g = isIpv4(gateway) ? ipToInt(gateway) - ipToInt(cidr.address) : -1;
    if (g <= 0 || g >= size - 1) {
      problems.push({ key: "subnets", source: at("subnets"), message: `${where("gateway")}: ${JSON.stringify(gateway)} is not a host address of ${input.cidr}` });
      return;
    }
    const dns = input.dns ?? [gateway];
    const badDns = dns.find((d) => !isIpv4(d));
    if (badDns !== undefined) {
      problems.push({ key: "subnets", source: at("subnets"), message: `${where("dns")}: ${JSON.stringify(badDns)} is not an IPv4 address` });
      return;
    }
    for (const other of subnets) {
      if (other.subnetId === input.subnet_id || other.network === input.network || other.bridge === input.bridge) {
        problems.push({ key: "subnets", source: at("subnets"), message: `${where("subnet_id")}: ${input.subnet_id} repeats the id, network or bridge of ${other.subnetId}` });
        return;
      }
    }
    subnets.push({
      subnetId: input.subnet_id,
      vpcId: input.vpc_id,
      network: input.network,
      bridge: input.bridge,
      address: cidr.address,
      prefixLength: cidr.prefixLength,
      gateway,
      dns,
    });
  });

  const credentials: Credential[] = [];
  const pairs = [
    ...(cfg.secret_id !== undefined && cfg.secret_key !== undefined ? [{ secret_id: cfg.secret_id, secret_key: cfg.secret_key }] : []),
    ...cfg.credentials,
  ];
  for (const pair of pairs) {
    const same = credentials.find((c) => c.secretId === pair.secret_id);
    if (same === undefined) credentials.push({ secretId: pair.secret_id, secretKey: pair.secret_key });
    else if (same.secretKey !== pair.secret_key) {
      problems.push({ key: "credentials", source: at("credentials"), message: `SecretId ${JSON.stringify(pair.secret_id)} appears twice with different keys` });
    }
  }

  let hostId = cfg.host_id;
  if (hostId === undefined) {
    if (options.machineId !== undefined && options.machineId.trim() !== "") hostId = deriveHostId(options.machineId);
    else {
      problems.push({
        key: "host_id",
        source: "default",
        message: "is not set and this machine has no machine ID (/etc/machine-id) to derive it from: set CDH_AGENT_HOST_ID (or host_id in the config file) to this host's own ID, host- and 8 lowercase letters or digits",
      });
    }
  }

  if (problems.length > 0 || typeof listen === "string" || hostId === undefined) throw new ConfigError(problems);

  return deepFreeze<AgentConfig>({
    dataDir: cfg.data_dir,
    apiListen: listen,
    ...(cfg.api_tls_cert !== undefined && cfg.api_tls_key !== undefined
      ? { apiTls: { certFile: cfg.api_tls_cert, keyFile: cfg.api_tls_key, ...(cfg.api_tls_client_ca !== undefined ? { clientCaFile: cfg.api_tls_client_ca } : {}) } }
      : {}),
    apiMaxConnections: cfg.api_max_connections,
    apiMaxConnectionsPerSource: cfg.api_max_connections_per_source,
    apiUnverifiedBodyBudgetBytes: cfg.api_unverified_body_budget_bytes,
    credentials,
    libvirtUri: cfg.libvirt_uri,
    virtType: cfg.virt_type,
    hostId,
    controllerUrl: cfg.controller_url,
    reportSchedule: cfg.report_schedule,
    reportTimeoutMs: cfg.report_timeout_ms,
    reservedCpu: cfg.reserved_cpu,
    reservedMemoryGib: cfg.reserved_memory_gib,
    reservedDiskGib: cfg.reserved_disk_gib,
    cpuAllocationRatio: cfg.cpu_allocation_ratio,
    memoryAllocationRatio: cfg.memory_allocation_ratio,
    launchConcurrency: cfg.launch_concurrency,
    softStopTimeoutS: cfg.soft_stop_timeout_s,
    softStopRetryS: cfg.soft_stop_retry_s,
    reconcileIntervalS: cfg.reconcile_interval_s,
    libvirtProbeIntervalS: cfg.libvirt_probe_interval_s,
    libvirtProbeTimeoutS: cfg.libvirt_probe_timeout_s,
    logLevel: cfg.log_level,
    defaultNetwork: cfg.default_network,
    hostZone: cfg.host_zone,
    imageDownloadTimeoutS: cfg.image_download_timeout_s,
    maxImageBytes: cfg.max_image_bytes,
    failPoint: cfg.fail_point,
    subnets,
    metadataPort: cfg.metadata_port,
    metadataNftTable: cfg.metadata_nft_table,
    metadataRequireToken: cfg.metadata_require_token,
    metadataMaxConnections: cfg.metadata_max_connections,
    metadataMaxConnectionsPerSource: cfg.metadata_max_connections_per_source,
    metadataMaxTokens: cfg.metadata_max_tokens,
    ntpServers: cfg.ntp_servers,
    region: cfg.region,
    storagePools,
    diskWipe: cfg.disk_wipe,
    inventorySweepSchedule: cfg.inventory_sweep_schedule,
    orphanGracePeriodS: cfg.orphan_grace_period_s,
    imageCacheSweepSchedule: cfg.image_cache_sweep_schedule,
    rescueKernel: cfg.rescue_kernel,
    rescueInitrd: cfg.rescue_initrd,
  });
}
