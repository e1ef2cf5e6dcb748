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
import { join } from "node:path";
import { validate as validateCron } from "node-cron";
import { z } from "zod";
import { intToIp, ipToInt, isIpv4, parseCidr, type Subnet } from "./network/subnets.js";
import { isLoopbackHost } from "./api/tls.js";
import { parseAlarmRules, type AlarmRule } from "./metrics/alarms.js";
import { ruleProblems, SEED_INTRANET_RULE, type IntranetRule } from "./network/bandwidth/rule.js";
import { CONFIG_KEYS, configSchema, DEFAULT_CONFIG_FILE, ENV_PREFIX, envVarName, type ConfigKey } from "./config-schema.js";

export { CONFIG_KEYS, configSchema, DEFAULT_CONFIG_FILE, ENV_PREFIX, envVarName, type ConfigKey };

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
  /** console_url_base; undefined = the API request's Host. */
  readonly consoleUrlBase?: string;
  readonly consoleAllowedOrigins: readonly string[];
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
  /** instance_overhead_gib: disk each instance takes beyond its disks (agent/storage/storage.ts). */
  readonly instanceOverheadGib: number;
  readonly cpuAllocationRatio: number;
  readonly memoryAllocationRatio: number;
  /** 0 = derived from the host's cores (see instances/launch-queue.ts). */
  readonly launchConcurrency: number;
  /** Security groups the host may hold (LimitExceeded beyond). */
  readonly securityGroupLimit: number;
  /** nic_detach_timeout_s: how long an ENI detach waits for the guest (seconds). */
  readonly nicDetachTimeoutS: number;
  readonly softStopTimeoutS: number;
  /** restore_power_on_start, restore_power_concurrency (agent/instances/power-restore.ts). */
  readonly restorePowerOnStart: boolean;
  readonly restorePowerConcurrency: number;
  readonly softStopRetryS: number;
  /** Hot-plug headroom (ResetInstancesType live): 0 = none. */
  readonly hotplugMaxVcpus: number;
  readonly hotplugMaxMemoryGib: number;
  readonly hotplugMemorySlots: number;
  readonly reconcileIntervalS: number;
  /** The monitor (agent/monitor): sample interval, series directory, days kept per period. */
  readonly monitorIntervalS: number;
  /** monitor_guest_fs_interval_s: the guests' filesystem usage through their agents; 0 = off. */
  readonly monitorGuestFsIntervalS: number;
  /** Prometheus /metrics listener; undefined = off (metrics_listen ""). */
  readonly metricsListen: { readonly host: string; readonly port: number } | undefined;
  readonly alarmRules: readonly AlarmRule[];
  readonly monitorDir: string;
  /** bandwidth_caps, intranet_caps (agent/network/bandwidth/rule.ts: the seeds' rule, with this host's overrides). */
  readonly bandwidthCaps: boolean;
  readonly intranetRule: IntranetRule;
  readonly monitorRetentionDays: Readonly<Partial<Record<"10" | "60" | "300" | "3600" | "86400", number>>>;
  readonly libvirtProbeIntervalS: number;
  readonly libvirtProbeTimeoutS: number;
  readonly logLevel: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
  readonly defaultNetwork: string;
  readonly hostZone: string;
  readonly imageDownloadTimeoutS: number;
  readonly maxImageBytes: number;
  readonly failPoint: string;
  /** agent/migration: the hosts this agent may move instances to, and its own migration address. */
  readonly migrationPeers: ReadonlyArray<{ hostId: string; endpoint: string; secretId: string; secretKey: string; caFile?: string; migrationAddress: string; libvirtUri?: string }>;
  readonly migrationAddress: string;
  readonly subnets: readonly Subnet[];
  /** DHCP on the subnets (README "DHCP"): host-wide switch and lease time. */
  readonly dhcpEnabled: boolean;
  readonly dhcpLeaseTimeS: number;
  readonly metadataPort: number;
  readonly metadataNftTable: string;
  readonly firewallNftTable: string;
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
  const metricsListen = cfg.metrics_listen === "" ? undefined : parseListen(cfg.metrics_listen);
  if (typeof metricsListen === "string") problems.push({ key: "metrics_listen", source: at("metrics_listen"), message: metricsListen });
  const alarmRules = parseAlarmRules(cfg.alarm_rules);
  if (typeof alarmRules === "string") problems.push({ key: "alarm_rules", source: at("alarm_rules"), message: alarmRules });
  const listen = parseListen(cfg.api_listen);
  if (typeof listen === "string") problems.push({ key: "api_listen", source: at("api_listen"), message: listen });
  if ((cfg.api_tls_cert === undefined) !== (cfg.api_tls_key === undefined)) {
    const missing = cfg.api_tls_cert === undefined ? "api_tls_cert" : "api_tls_key";
    const present = missing === "api_tls_cert" ? "api_tls_key" : "api_tls_cert";
    problems.push({ key: missing, source: at(present), message: `${present} is set but ${missing} is not: set both or neither` });
  }
  if (cfg.api_tls_cert !== undefined && cfg.console_url_base.startsWith("ws://")) {
    problems.push({ key: "console_url_base", source: at("console_url_base"), message: "the API is TLS: console URLs must be wss:// (a browser refuses ws:// from an https page)" });
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
  const caps = cfg.intranet_caps;
  const intranetRule: IntranetRule = Object.freeze({
    mbpsPerVcpu: caps.mbps_per_vcpu ?? SEED_INTRANET_RULE.mbpsPerVcpu,
    minMbps: caps.min_mbps ?? SEED_INTRANET_RULE.minMbps,
    maxMbps: caps.max_mbps ?? SEED_INTRANET_RULE.maxMbps,
    ppsPerVcpu: caps.pps_per_vcpu ?? SEED_INTRANET_RULE.ppsPerVcpu,
    minPps: caps.min_pps ?? SEED_INTRANET_RULE.minPps,
    maxPps: caps.max_pps ?? SEED_INTRANET_RULE.maxPps,
  });
  for (const message of ruleProblems(intranetRule)) problems.push({ key: "intranet_caps", source: at("intranet_caps"), message: `intranet_caps: ${message}` });
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
      ...(input.dhcp === false ? { dhcp: false } : {}),
      ...(input.internet_route ? { internetRoute: true } : {}),
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
    ...(cfg.console_url_base !== "" ? { consoleUrlBase: cfg.console_url_base } : {}),
    consoleAllowedOrigins: cfg.console_allowed_origins,
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
    instanceOverheadGib: cfg.instance_overhead_gib,
    cpuAllocationRatio: cfg.cpu_allocation_ratio,
    memoryAllocationRatio: cfg.memory_allocation_ratio,
    launchConcurrency: cfg.launch_concurrency,
    softStopTimeoutS: cfg.soft_stop_timeout_s,
    restorePowerOnStart: cfg.restore_power_on_start,
    restorePowerConcurrency: cfg.restore_power_concurrency,
    softStopRetryS: cfg.soft_stop_retry_s,
    hotplugMaxVcpus: cfg.hotplug_max_vcpus,
    hotplugMaxMemoryGib: cfg.hotplug_max_memory_gib,
    hotplugMemorySlots: cfg.hotplug_memory_slots,
    reconcileIntervalS: cfg.reconcile_interval_s,
    monitorIntervalS: cfg.monitor_interval_s,
    monitorGuestFsIntervalS: cfg.monitor_guest_fs_interval_s,
    metricsListen: typeof metricsListen === "string" ? undefined : metricsListen,
    alarmRules: typeof alarmRules === "string" ? [] : alarmRules,
    monitorDir: cfg.monitor_dir === "" ? join(cfg.data_dir, "monitor") : cfg.monitor_dir,
    monitorRetentionDays: cfg.monitor_retention_days,
    bandwidthCaps: cfg.bandwidth_caps,
    intranetRule,
    libvirtProbeIntervalS: cfg.libvirt_probe_interval_s,
    libvirtProbeTimeoutS: cfg.libvirt_probe_timeout_s,
    logLevel: cfg.log_level,
    defaultNetwork: cfg.default_network,
    hostZone: cfg.host_zone,
    imageDownloadTimeoutS: cfg.image_download_timeout_s,
    maxImageBytes: cfg.max_image_bytes,
    failPoint: cfg.fail_point,
    migrationPeers: cfg.migration_peers.map((p) => ({
      hostId: p.host_id,
      endpoint: p.endpoint,
      secretId: p.secret_id,
      secretKey: p.secret_key,
      ...(p.ca_file !== undefined ? { caFile: p.ca_file } : {}),
      migrationAddress: p.migration_address,
      ...(p.libvirt_uri !== undefined ? { libvirtUri: p.libvirt_uri } : {}),
    })),
    migrationAddress: cfg.migration_address,
    subnets,
    dhcpEnabled: cfg.dhcp_enabled,
    dhcpLeaseTimeS: cfg.dhcp_lease_time_s,
    metadataPort: cfg.metadata_port,
    metadataNftTable: cfg.metadata_nft_table,
    firewallNftTable: cfg.firewall_nft_table,
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
    securityGroupLimit: cfg.security_group_limit,
    nicDetachTimeoutS: cfg.nic_detach_timeout_s,
    imageCacheSweepSchedule: cfg.image_cache_sweep_schedule,
    rescueKernel: cfg.rescue_kernel,
    rescueInitrd: cfg.rescue_initrd,
  });
}
