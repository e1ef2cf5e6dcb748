import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  CONFIG_KEYS,
  ConfigError,
  DEFAULT_CONFIG_FILE,
  deriveHostId,
  envVarName,
  loadConfig,
  type LoadConfigOptions,
} from "../../agent/config.js";

const MACHINE_ID = "0123456789abcdef0123456789abcdef\n";

function files(map: Record<string, string>): (path: string) => string | undefined {
  return (path) => map[path];
}

function load(opts: Partial<LoadConfigOptions> = {}) {
  return loadConfig({ env: {}, readFile: files({}), machineId: MACHINE_ID, ...opts });
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

describe("loadConfig", () => {
  it("returns every default when there is no file and no environment", () => {
    const cfg = load();
    expect(cfg).toEqual({
      dataDir: "/var/lib/cdh-agent",
      apiListen: { host: "127.0.0.1", port: 8620 },
      apiMaxConnections: 256,
      apiMaxConnectionsPerSource: 64,
      apiUnverifiedBodyBudgetBytes: 16 * 1024 * 1024,
      consoleAllowedOrigins: [],
      credentials: [],
      libvirtUri: "qemu:///system",
      virtType: "auto",
      hostId: deriveHostId(MACHINE_ID),
      controllerUrl: "",
      reportSchedule: "*/30 * * * * *",
      reportTimeoutMs: 5000,
      reservedCpu: 0,
      reservedMemoryGib: 1,
      reservedDiskGib: 10,
      instanceOverheadGib: 2,
      cpuAllocationRatio: 1,
      memoryAllocationRatio: 1,
      launchConcurrency: 0,
      softStopTimeoutS: 60,
      restorePowerOnStart: true,
      restorePowerConcurrency: 4,
      softStopRetryS: 10,
      hotplugMaxVcpus: 0,
      hotplugMaxMemoryGib: 0,
      hotplugMemorySlots: 8,
      reconcileIntervalS: 60,
      monitorIntervalS: 10,
      monitorGuestFsIntervalS: 60,
      metricsListen: { host: "127.0.0.1", port: 9178 },
      alarmRules: [],
      monitorDir: "/var/lib/cdh-agent/monitor",
      monitorRetentionDays: {},
      nicDetachTimeoutS: 30,
      bandwidthCaps: true,
      intranetRule: { mbpsPerVcpu: 187.5, minMbps: 1500, maxMbps: 25_000, ppsPerVcpu: 50_000, minPps: 100_000, maxPps: 400_000 },
      libvirtProbeIntervalS: 5,
      libvirtProbeTimeoutS: 10,
      logLevel: "info",
      defaultNetwork: "cdh-default",
      hostZone: "zone-1",
      imageDownloadTimeoutS: 3600,
      maxImageBytes: 1024 ** 4,
      failPoint: "",
      migrationPeers: [],
      migrationAddress: "",
      subnets: [
        {
          subnetId: "subnet-default",
          vpcId: "vpc-default",
          network: "cdh-default",
          bridge: "cdhbr0",
          address: "10.201.0.0",
          prefixLength: 24,
          gateway: "10.201.0.1",
          dns: ["10.201.0.1"],
        },
      ],
      dhcpEnabled: true,
      dhcpLeaseTimeS: 3600,
      metadataPort: 8775,
      metadataNftTable: "cdh_metadata",
      firewallNftTable: "cdh_filter",
      metadataRequireToken: false,
      metadataMaxConnections: 4096,
      metadataMaxConnectionsPerSource: 128,
      metadataMaxTokens: 65536,
      ntpServers: [],
      region: "local",
      storagePools: [{ name: "local", path: "/var/lib/cdh-agent/pools/local", diskType: "LOCAL_BASIC", iops: 2000, throughputMBps: 150 }],
      diskWipe: "discard",
      inventorySweepSchedule: "0 */10 * * * *",
      imageCacheSweepSchedule: "0 */15 * * * *",
      orphanGracePeriodS: 86400,
      securityGroupLimit: 50,
      rescueKernel: "/var/lib/cdh-agent/rescue/rescue-vmlinuz",
      rescueInitrd: "/var/lib/cdh-agent/rescue/rescue-initrd.gz",
    });
  });

  it("reads storage pools, fills per-type IO limits and refuses a repeated pool naming the key", () => {
    const cfg = load({
      env: { CDH_AGENT_STORAGE_POOLS: JSON.stringify([{ name: "ssd", path: "/srv/ssd/", disk_type: "LOCAL_SSD", size_gib: 500 }, { name: "hdd", path: "/srv/hdd", disk_type: "LOCAL_BASIC", iops: 0 }]) },
    });
    expect(cfg.storagePools).toEqual([
      { name: "ssd", path: "/srv/ssd", diskType: "LOCAL_SSD", sizeGiB: 500, iops: 20000, throughputMBps: 500 },
      { name: "hdd", path: "/srv/hdd", diskType: "LOCAL_BASIC", iops: 0, throughputMBps: 150 },
    ]);
    const e = errorOf(() => load({ env: { CDH_AGENT_STORAGE_POOLS: JSON.stringify([{ name: "a", path: "/x", disk_type: "LOCAL_SSD" }, { name: "b", path: "/x", disk_type: "LOCAL_SSD" }]) } }));
    expect(e.key).toBe("storage_pools");
    expect(errorOf(() => load({ env: { CDH_AGENT_STORAGE_POOLS: JSON.stringify([{ name: "a", path: "rel", disk_type: "LOCAL_SSD" }]) } })).key).toBe("storage_pools");
    expect(errorOf(() => load({ env: { CDH_AGENT_STORAGE_POOLS: JSON.stringify([{ name: "a", path: "/x", disk_type: "CLOUD_SSD" }]) } })).key).toBe("storage_pools");
  });

  it("reads the default file path when no file is given", () => {
    const cfg = load({ readFile: files({ [DEFAULT_CONFIG_FILE]: JSON.stringify({ host_zone: "zone-9" }) }) });
    expect(cfg.hostZone).toBe("zone-9");
  });

  it("refuses an explicitly given file that does not exist", () => {
    const err = errorOf(() => load({ file: "/nope/config.json" }));
    expect(err.message).toContain("/nope/config.json");
    expect(err.message).toContain("does not exist");
  });

  it("lets the file override defaults and the environment override the file", () => {
    const cfg = load({
      file: "/c.json",
      readFile: files({ "/c.json": JSON.stringify({ data_dir: "/srv/file", log_level: "debug", reserved_cpu: 2 }) }),
      env: { CDH_AGENT_DATA_DIR: "/srv/env", PATH: "/usr/bin" },
    });
    expect(cfg.dataDir).toBe("/srv/env");
    expect(cfg.logLevel).toBe("debug");
    expect(cfg.reservedCpu).toBe(2);
  });

  it("coerces environment strings to numbers and JSON per key type", () => {
    const cfg = load({
      env: {
        CDH_AGENT_REPORT_TIMEOUT_MS: "2500",
        CDH_AGENT_CPU_ALLOCATION_RATIO: "2.5",
        CDH_AGENT_CREDENTIALS: '[{"secret_id":"AKID2","secret_key":"k2"}]',
      },
    });
    expect(cfg.reportTimeoutMs).toBe(2500);
    expect(cfg.cpuAllocationRatio).toBe(2.5);
    expect(cfg.credentials).toEqual([{ secretId: "AKID2", secretKey: "k2" }]);
  });

  it("names the key and the environment variable when a number does not parse", () => {
    const err = errorOf(() => load({ env: { CDH_AGENT_REPORT_TIMEOUT_MS: "5s" } }));
    expect(err.key).toBe("report_timeout_ms");
    expect(err.message).toContain("report_timeout_ms");
    expect(err.message).toContain("CDH_AGENT_REPORT_TIMEOUT_MS");
    expect(err.message).toContain('"5s"');
  });

  it("names the key and the file when a file value is out of range", () => {
    const err = errorOf(() =>
      load({ file: "/c.json", readFile: files({ "/c.json": JSON.stringify({ memory_allocation_ratio: 17 }) }) }),
    );
    expect(err.key).toBe("memory_allocation_ratio");
    expect(err.message).toMatch(/memory_allocation_ratio.*file \/c\.json/);
  });

  it("refuses allocation ratios of zero", () => {
    expect(errorOf(() => load({ env: { CDH_AGENT_CPU_ALLOCATION_RATIO: "0" } })).key).toBe("cpu_allocation_ratio");
  });

  it("refuses unknown keys in the file", () => {
    const err = errorOf(() =>
      load({ file: "/c.json", readFile: files({ "/c.json": JSON.stringify({ data_dri: "/x" }) }) }),
    );
    expect(err.message).toContain("data_dri");
    expect(err.message).toContain("unknown key");
  });

  it("refuses unknown CDH_AGENT_ environment variables and names them", () => {
    const err = errorOf(() => load({ env: { CDH_AGENT_DATADIR: "/x", CDH_AGENT_FOO: "1", OTHER: "ok" } }));
    expect(err.message).toContain("CDH_AGENT_DATADIR");
    expect(err.message).toContain("CDH_AGENT_FOO");
    expect(err.message).not.toContain("OTHER");
  });

  it("refuses a file that is not a JSON object", () => {
    expect(errorOf(() => load({ file: "/c.json", readFile: files({ "/c.json": "{ nope" }) })).message).toContain(
      "not valid JSON",
    );
    expect(errorOf(() => load({ file: "/c.json", readFile: files({ "/c.json": "[1]" }) })).message).toContain(
      "JSON object",
    );
  });

  it("parses api_listen into host and port, IPv6 included", () => {
    expect(load({ env: { CDH_AGENT_API_LISTEN: "0.0.0.0:80", CDH_AGENT_API_ALLOW_PLAIN_HTTP: "true" } }).apiListen).toEqual({ host: "0.0.0.0", port: 80 });
    expect(load({ env: { CDH_AGENT_API_LISTEN: "[::1]:8620" } }).apiListen).toEqual({ host: "::1", port: 8620 });
    expect(load({ env: { CDH_AGENT_API_LISTEN: "localhost:9000" } }).apiListen).toEqual({ host: "localhost", port: 9000 });
  });

  it.each(["0.0.0.0:8620", "10.0.0.5:8620", "[::]:8620", "agent.example:8620"])(
    "refuses plain HTTP on the non-loopback api_listen %j, saying why and what to set",
    (value) => {
      const err = errorOf(() => load({ env: { CDH_AGENT_API_LISTEN: value } }));
      expect(err.key).toBe("api_listen");
      expect(err.message).toContain("not a loopback address and the API has no TLS");
      expect(err.message).toContain("api_tls_cert");
      expect(err.message).toContain("api_allow_plain_http");
    },
  );

  it("allows a non-loopback api_listen with TLS, and plain HTTP on any loopback address", () => {
    const tls = load({ env: { CDH_AGENT_API_LISTEN: "0.0.0.0:8620", CDH_AGENT_API_TLS_CERT: "/etc/c.pem", CDH_AGENT_API_TLS_KEY: "/etc/k.pem" } });
    expect(tls.apiTls).toEqual({ certFile: "/etc/c.pem", keyFile: "/etc/k.pem" });
    const mutual = load({
      env: { CDH_AGENT_API_TLS_CERT: "/etc/c.pem", CDH_AGENT_API_TLS_KEY: "/etc/k.pem", CDH_AGENT_API_TLS_CLIENT_CA: "/etc/ca.pem" },
    });
    expect(mutual.apiTls).toEqual({ certFile: "/etc/c.pem", keyFile: "/etc/k.pem", clientCaFile: "/etc/ca.pem" });
    for (const host of ["127.0.0.1", "127.8.9.10", "[::1]", "localhost"]) {
      expect(load({ env: { CDH_AGENT_API_LISTEN: `${host}:8620` } }).apiTls).toBeUndefined();
    }
  });

  it("refuses half a TLS configuration", () => {
    expect(errorOf(() => load({ env: { CDH_AGENT_API_TLS_CERT: "/etc/c.pem" } })).key).toBe("api_tls_key");
    expect(errorOf(() => load({ env: { CDH_AGENT_API_TLS_KEY: "/etc/k.pem" } })).key).toBe("api_tls_cert");
    expect(errorOf(() => load({ env: { CDH_AGENT_API_TLS_CLIENT_CA: "/etc/ca.pem" } })).key).toBe("api_tls_client_ca");
  });

  it.each(["8620", "::1:8620", "127.0.0.1:0", "127.0.0.1:70000", "[nothost]:80", "bad host:80"])(
    "refuses api_listen %j",
    (value) => {
      const err = errorOf(() => load({ env: { CDH_AGENT_API_LISTEN: value } }));
      expect(err.key).toBe("api_listen");
      expect(err.message).toContain("CDH_AGENT_API_LISTEN");
    },
  );

  it("merges the secret_id/secret_key pair with the credentials list", () => {
    const cfg = load({
      file: "/c.json",
      readFile: files({
        "/c.json": JSON.stringify({ secret_id: "AKID1", credentials: [{ secret_id: "AKID2", secret_key: "k2" }] }),
      }),
      env: { CDH_AGENT_SECRET_KEY: "k1" },
    });
    expect(cfg.credentials).toEqual([
      { secretId: "AKID1", secretKey: "k1" },
      { secretId: "AKID2", secretKey: "k2" },
    ]);
  });

  it("refuses a secret_id without a secret_key", () => {
    const err = errorOf(() => load({ env: { CDH_AGENT_SECRET_ID: "AKID1" } }));
    expect(err.key).toBe("secret_key");
    expect(err.message).toContain("set both or neither");
  });

  it("refuses one SecretId with two different keys", () => {
    const err = errorOf(() =>
      load({
        env: {
          CDH_AGENT_SECRET_ID: "AKID1",
          CDH_AGENT_SECRET_KEY: "k1",
          CDH_AGENT_CREDENTIALS: '[{"secret_id":"AKID1","secret_key":"other"}]',
        },
      }),
    );
    expect(err.key).toBe("credentials");
  });

  it("refuses a credentials entry with an unknown field", () => {
    const err = errorOf(() => load({ env: { CDH_AGENT_CREDENTIALS: '[{"secret_id":"a","secret_key":"b","x":1}]' } }));
    expect(err.key).toBe("credentials");
  });

  it("validates host_id and uses a given one over the derived one", () => {
    expect(load({ env: { CDH_AGENT_HOST_ID: "host-abcd1234" } }).hostId).toBe("host-abcd1234");
    expect(errorOf(() => load({ env: { CDH_AGENT_HOST_ID: "host-ABCD1234" } })).key).toBe("host_id");
    expect(errorOf(() => load({ env: { CDH_AGENT_HOST_ID: "ins-abcd1234" } })).key).toBe("host_id");
  });

  it("treats an empty CDH_AGENT_HOST_ID as unset", () => {
    expect(load({ env: { CDH_AGENT_HOST_ID: "" } }).hostId).toBe(deriveHostId(MACHINE_ID));
  });

  it("fails when host_id is unset and no machine id is available, naming CDH_AGENT_HOST_ID", () => {
    const err = errorOf(() => loadConfig({ env: {}, readFile: files({}) }));
    expect(err.key).toBe("host_id");
    expect(err.message).toContain("CDH_AGENT_HOST_ID");
    expect(err.message.split("\n")).toHaveLength(1);
    // A blank machine ID is no machine ID.
    expect(errorOf(() => loadConfig({ env: {}, readFile: files({}), machineId: " \n" })).message).toContain("CDH_AGENT_HOST_ID");
  });

  it("accepts an empty controller_url or an http(s) URL and refuses anything else", () => {
    expect(load({ env: { CDH_AGENT_CONTROLLER_URL: "" } }).controllerUrl).toBe("");
    expect(load({ env: { CDH_AGENT_CONTROLLER_URL: "https://c.example/r" } }).controllerUrl).toBe("https://c.example/r");
    expect(errorOf(() => load({ env: { CDH_AGENT_CONTROLLER_URL: "ftp://c.example" } })).key).toBe("controller_url");
    expect(errorOf(() => load({ env: { CDH_AGENT_CONTROLLER_URL: "not a url" } })).key).toBe("controller_url");
  });

  it("validates report_schedule with node-cron", () => {
    expect(load({ env: { CDH_AGENT_REPORT_SCHEDULE: "*/5 * * * * *" } }).reportSchedule).toBe("*/5 * * * * *");
    expect(errorOf(() => load({ env: { CDH_AGENT_REPORT_SCHEDULE: "every 5 seconds" } })).key).toBe("report_schedule");
  });

  it("refuses a virt_type outside kvm, qemu and auto", () => {
    const err = errorOf(() => load({ env: { CDH_AGENT_VIRT_TYPE: "xen" } }));
    expect(err.key).toBe("virt_type");
    expect(err.message).toContain("CDH_AGENT_VIRT_TYPE");
  });

  it("reports every bad key at once", () => {
    const err = errorOf(() => load({ env: { CDH_AGENT_RESERVED_CPU: "-1", CDH_AGENT_LOG_LEVEL: "loud" } }));
    expect(err.problems.map((p) => p.key).sort()).toEqual(["log_level", "reserved_cpu"]);
  });

  it("returns a deeply frozen object", () => {
    const cfg = load({ env: { CDH_AGENT_SECRET_ID: "a", CDH_AGENT_SECRET_KEY: "b" } });
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg.apiListen)).toBe(true);
    expect(Object.isFrozen(cfg.credentials)).toBe(true);
    expect(Object.isFrozen(cfg.credentials[0])).toBe(true);
  });
});

describe("deriveHostId", () => {
  it("is stable, ignores the trailing newline and matches the host ID format", () => {
    const id = deriveHostId("0123456789abcdef0123456789abcdef");
    expect(id).toMatch(/^host-[a-z0-9]{8}$/);
    expect(deriveHostId("0123456789abcdef0123456789abcdef\n")).toBe(id);
    expect(deriveHostId("fedcba9876543210fedcba9876543210")).not.toBe(id);
  });
});

describe("env.example", () => {
  it("documents every configuration key as its environment variable", () => {
    const text = readFileSync(new URL("../../systemd/env.example", import.meta.url), "utf8");
    const missing = CONFIG_KEYS.map(envVarName).filter((name) => !text.includes(`${name}=`));
    expect(missing).toEqual([]);
  });
});
