/**
 * The agent's settings as one schema: every key with its type, default, unit and the
 * one-line meaning the README and systemd/env.example repeat (a test keeps them equal).
 * agent/config.ts loads the sources against it; this file only declares.
 */
import { z } from "zod";

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
    dhcp: z.boolean().optional(),
    /** The operator routes traffic out of the VPC from this subnet: InternetMaxBandwidthOut is accepted and caps it. */
    internet_route: z.boolean().optional(),
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

/** A host this agent may move instances to (agent/migration). */
const migrationPeerSchema = z
  .object({
    host_id: z.string().regex(HOST_ID_RE, "must be host- and 8 lowercase letters or digits"),
    endpoint: z.string().regex(/^https?:\/\/[^/\s]+\/?$/, "must be https://ADDRESS:PORT"),
    secret_id: z.string().min(1, "secret_id must not be empty"),
    secret_key: z.string().min(1, "secret_key must not be empty"),
    ca_file: z.string().startsWith("/", "must be an absolute path").optional(),
    migration_address: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, "must be an IPv4 address"),
    libvirt_uri: z.string().min(1).optional(),
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
    /** Base of the console URLs (DescribeInstanceVncUrl); "" = the API request's Host, wss:// when the API is TLS. */
    console_url_base: z.union([z.literal(""), z.string().regex(/^wss?:\/\/(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/, "must be ws://host[:port] or wss://host[:port], without a path")]).default("")
      .describe("base of the console URLs DescribeInstanceVncUrl answers, wss://host[:port] (the address owners' browsers reach the API at); empty = the Host the API request came to, wss:// when the API is TLS, ws:// otherwise"),
    /** Origins whose pages may open console sessions besides the console URL's own. */
    console_allowed_origins: z.array(z.string().regex(/^https?:\/\/[^/?#\s]+$/, "must be an origin such as https://panel.example.com")).default([])
      .describe('origins whose pages may open console WebSocket sessions besides the console URL\'s own host, JSON array such as ["https://panel.example.com"]'),
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
    /** Local disk each sub-instance takes beyond its disks, for its configuration files (the CDH FAQ's 2 GB), GiB. */
    instance_overhead_gib: z.number().nonnegative().max(1024).default(2)
      .describe("local disk each instance takes beyond what its disks ask, for its configuration files (GiB; the CDH FAQ's 2 GB); counted in admission and DiskAvailable"),
    /** vCPUs sold per physical core (ratio, > 0, ≤ 16). */
    cpu_allocation_ratio: z.number().positive().max(16).default(1.0)
      .describe("vCPUs per host core (ratio, > 0 and <= 16)"),
    /** Guest memory per host memory (ratio, > 0, ≤ 16). */
    memory_allocation_ratio: z.number().positive().max(16).default(1.0)
      .describe("guest memory per host memory (ratio, > 0 and <= 16)"),
    /** Launches that make disks and define and start domains at once; the rest wait PENDING. 0 = four per host core (4 to 32). */
    launch_concurrency: z.number().int().nonnegative().max(256).default(0)
      .describe("launches run at once on this host (instances); the others wait in order, PENDING; 0 = four per host core, at least 4, at most 32"),
    /** Hot-plug headroom: vCPUs every definition may grow to while running (ResetInstancesType live); 0 = none. */
    hotplug_max_vcpus: z.number().int().nonnegative().max(256).default(0)
      .describe("vCPUs every instance's definition may grow to while it runs (ResetInstancesType applied live); 0 = no vCPU headroom"),
    /** Hot-plug headroom: memory every definition may grow to while running, GiB; 0 = none. */
    hotplug_max_memory_gib: z.number().int().nonnegative().max(4096).default(0)
      .describe("memory every instance's definition may grow to while it runs, by hot-plugged DIMMs (GiB); 0 = no memory headroom"),
    /** DIMM slots kept in each definition with memory headroom (each live growth takes one). */
    hotplug_memory_slots: z.number().int().min(1).max(32).default(8)
      .describe("DIMM slots kept in each definition with memory headroom; each live memory growth takes one"),
    /** How long a soft stop waits for the guest before it fails (or goes hard), seconds. */
    soft_stop_timeout_s: seconds().default(60)
      .describe("how long a soft stop waits for the guest (seconds)"),
    /** Interval between ACPI shutdown requests during a soft stop, seconds. */
    soft_stop_retry_s: seconds().default(10)
      .describe("interval between repeated ACPI shutdown requests during a soft stop (seconds)"),
    /** At start-up, start again the instances that ran before the host (or libvirtd and the agent) went down. */
    restore_power_on_start: z.boolean().default(true)
      .describe("at start-up, start again every instance the owner left running whose domain is found shut off (after a power loss or a host restart)"),
    /** Starts under way at once during that restore. */
    restore_power_concurrency: z.number().int().positive().max(256).default(4)
      .describe("instance starts under way at once during the start-up power restore; the others wait STARTING"),
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
      .describe('guest subnets, JSON array of {"subnet_id","vpc_id","network","bridge","cidr","gateway"?,"dns"?,"dhcp"?,"internet_route"?}; empty = one isolated subnet 10.201.0.0/24 on default_network; "dhcp": false = no DHCP on that subnet; "internet_route": true = traffic can leave the VPC from it (InternetMaxBandwidthOut accepted and enforced)'),
    /** Per-NIC bandwidth and packet caps enforced on the host (agent/network/bandwidth). */
    bandwidth_caps: z.boolean().default(true)
      .describe("enforce per-NIC bandwidth and packet-rate caps on the host with tc and nftables (true/false); false = no intranet cap, and InternetMaxBandwidthOut is recorded and shown but not enforced"),
    /** The intranet cap rule: per vCPU within a floor and a ceiling (agent/network/bandwidth/rule.ts); a field left out keeps its default. */
    intranet_caps: z.object({
      mbps_per_vcpu: z.number().positive().optional(),
      min_mbps: z.number().positive().optional(),
      max_mbps: z.number().positive().optional(),
      pps_per_vcpu: z.number().int().positive().optional(),
      min_pps: z.number().int().positive().optional(),
      max_pps: z.number().int().positive().optional(),
    }).strict().default({})
      .describe('intranet bandwidth and packet caps per NIC from the instance size, JSON object {"mbps_per_vcpu":187.5,"min_mbps":1500,"max_mbps":25000,"pps_per_vcpu":50000,"min_pps":100000,"max_pps":400000} (those are the defaults, modelled on the seeds\' S2 table; a field left out keeps its default; Mbit/s and packets/s, each direction)'),
    /** DHCP (fixed leases, one per NIC) on every subnet whose entry does not say "dhcp": false. */
    dhcp_enabled: z.boolean().default(true)
      .describe('serve DHCP with fixed leases (one per NIC the agent knows) on every subnet, by one dnsmasq per subnet (true/false); a subnet entry with "dhcp": false has none'),
    /** Lease time of the fixed DHCP leases. */
    dhcp_lease_time_s: z.number().int().min(120).max(31_536_000).default(3600)
      .describe("lease time of the fixed DHCP leases (seconds, at least 120); a guest renews after half of it"),
    /** Port the metadata endpoint listens on at each subnet's gateway (guests use 80 through a redirect). */
    metadata_port: z.number().int().min(1).max(65535).default(8775)
      .describe("port of the metadata endpoint on each subnet gateway; guests reach it at 169.254.169.254:80 and 169.254.0.23:80"),
    /** The agent's own nftables table (ip family) for the metadata redirect; replaced whole at start. */
    metadata_nft_table: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, "must be an nftables table name (a letter, then letters, digits or _)").default("cdh_metadata")
      .describe("the agent's own nftables table (ip family) for the metadata redirect, replaced whole at start; two agents in one network namespace need two names"),
    /** The agent's own nftables tables (inet and bridge) for security groups and anti-spoofing. */
    firewall_nft_table: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, "must be an nftables table name (a letter, then letters, digits or _)").default("cdh_filter")
      .describe("the agent's own nftables tables (an inet and a bridge table of this name) for security groups and anti-spoofing, replaced whole at start; two agents in one network namespace need two names"),
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
    /** Security groups the host may hold, the default group included (the seeds: 50 per region). */
    security_group_limit: z.number().int().min(1).max(10000).default(50)
      .describe("security groups this host may hold, the default group included; CreateSecurityGroup beyond it is LimitExceeded"),
    /** How long DetachNetworkInterface waits for a running guest to release the NIC (ACPI unplug). */
    nic_detach_timeout_s: z.number().int().min(1).max(600).default(30)
      .describe("how long DetachNetworkInterface waits for a running guest to release the NIC before it is refused (UnsupportedOperation.InvalidState) and the NIC stays attached (seconds)"),
    /** The rescue system's kernel (scripts/build-rescue-image.sh). */
    rescue_kernel: z.string().startsWith("/", "must be an absolute path").default("/var/lib/cdh-agent/rescue/rescue-vmlinuz")
      .describe("kernel of the rescue system that EnterRescueMode boots (absolute path; built by scripts/build-rescue-image.sh)"),
    /** The rescue system's initramfs. */
    rescue_initrd: z.string().startsWith("/", "must be an absolute path").default("/var/lib/cdh-agent/rescue/rescue-initrd.gz")
      .describe("initramfs of the rescue system (absolute path; built by scripts/build-rescue-image.sh)"),
    /** Interval of the monitor's bulk statistics sample (virsh domstats --nowait), seconds. */
    monitor_interval_s: z.number().int().min(1).max(3600).default(10)
      .describe("interval of the monitor's bulk statistics sample of all instances (seconds, 1 to 3600); the finest period GetMonitorData answers is 10 s"),
    /** Interval of the guests' filesystem usage (guest agent guest-get-fsinfo, agent/monitor/guest-fs.ts), seconds; 0 = off. */
    monitor_guest_fs_interval_s: z.number().int().min(0).max(86400).default(60)
      .describe("interval of the guest filesystem usage read through each running instance's guest agent (CvmDiskUsage, CvmDiskUsageMax; seconds, 0 = off)"),
    /** Directory of the monitor's series files; empty = <data_dir>/monitor. */
    monitor_dir: z.union([z.literal(""), z.string().startsWith("/", "must be an absolute path")]).default("")
      .describe("directory of the monitor's series files (absolute path); empty = <data_dir>/monitor"),
    /** Days each period is kept; keys 10, 60, 300, 3600, 86400; unnamed periods keep the Monitor API's retention. */
    monitor_retention_days: z.object({
      "10": z.number().positive().max(3660).optional(),
      "60": z.number().positive().max(3660).optional(),
      "300": z.number().positive().max(3660).optional(),
      "3600": z.number().positive().max(3660).optional(),
      "86400": z.number().positive().max(3660).optional(),
    }).strict().default({})
      .describe('days each monitor period is kept, JSON object {"10":1,"60":15,"300":31,"3600":93,"86400":186} (those are the defaults; a period left out keeps its default)'),
    /** Listen address of the Prometheus /metrics endpoint; "" = off. */
    metrics_listen: z.string().default("127.0.0.1:9178")
      .describe("address of the Prometheus /metrics endpoint, host:port or [ipv6]:port; empty = no endpoint"),
    /** Alarm rules of the host (agent/metrics/alarms.ts), until the controller sets its own (ModifyAlarmPolicies). */
    alarm_rules: z.string().default("")
      .describe("alarm rules METRIC>THRESHOLD[:SAMPLES], comma-separated, e.g. CPUUsage>90:3,MemUsage>=95:2 (operators > >= < <=; SAMPLES consecutive samples to fire and to resolve, default 1); empty = none; ModifyAlarmPolicies replaces them"),
    /** Hosts this agent may move instances to (MigrateInstances), each with its own API credential. */
    migration_peers: z.array(migrationPeerSchema).default([])
      .describe('hosts this agent may move instances to (MigrateInstances), JSON array of {"host_id","endpoint","secret_id","secret_key","ca_file"?,"migration_address","libvirt_uri"?}: the peer agent\'s API and one of its credentials, the address its libvirtd and QEMU take migrations on'),
    /** This host's address for incoming migrations (the cold path's NBD exports); "" = none. */
    migration_address: z.string().regex(/^(\d{1,3}(\.\d{1,3}){3})?$/, "must be an IPv4 address or empty").default("")
      .describe("this host's address for incoming migration traffic (the cold path's NBD disk exports listen there); empty = this host takes no cold migrations"),
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
