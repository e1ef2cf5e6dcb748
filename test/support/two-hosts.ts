/**
 * Two test hosts for the migration tests (scripts/two-hosts.sh): the test runs in cdhtest,
 * where agent A runs; agent B runs in cdhtest2 (its own network and mount namespaces and
 * libvirtd). Each agent serves its API over TLS on its migration-link address (10.250.0.1 and
 * 10.250.0.2, certificates from a CA made here) with its own credential, and has the other in
 * `migration_peers`. The controller is the test, with the official SDK against both.
 */
import { execa } from "execa";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { Agent } from "node:https";
import { join, resolve } from "node:path";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { CommonClient } from "tencentcloud-sdk-nodejs-common";
import { hostIdFor, makeDataDir, SECRET_ID, SECRET_KEY, startAgentProcess, TEST_DATA_ROOT, type AgentProcess, type CvmClient } from "./agent-process.js";

export const HOST_A = { name: "cdhtest", address: "10.250.0.1", secretId: SECRET_ID, secretKey: SECRET_KEY };
export const HOST_B = { name: "cdhtest2", address: "10.250.0.2", secretId: "AKIDcdhagenttest0000000000000002", secretKey: "cdh-agent-test-secret-key-0002" };

export interface TwoHosts {
  a: AgentProcess;
  b: AgentProcess;
  /** SDK clients over TLS (the CVM client, and the common client for this agent's own actions). */
  common: { a: CommonClient; b: CommonClient };
  caFile: string;
  /** Stops both agents (terminating their instances first). */
  shutdown(): Promise<void>;
}

function run(repoRoot: string, ...args: string[]) {
  return execa("bash", [resolve(repoRoot, "scripts/two-hosts.sh"), ...args], { stdio: "inherit" });
}

/** Both hosts and their links up (idempotent): scripts/two-hosts.sh up. */
export async function twoHostsUp(repoRoot: string): Promise<void> {
  await run(repoRoot, "up");
}

/** A CA and one server certificate per link address (<dir>/ca.crt, <dir>/<host name>.crt|.key); bench (p) uses it too. */
export async function certificates(dir: string): Promise<void> {
  const openssl = (...args: string[]) => execa("openssl", args, { cwd: dir });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl("req", "-x509", ...newKey, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=cdh-two-hosts-ca");
  for (const h of [HOST_A, HOST_B]) {
    await writeFile(join(dir, `${h.name}.ext`), `basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:${h.address}\n`);
    await openssl("req", ...newKey, "-keyout", `${h.name}.key`, "-out", `${h.name}.csr`, "-subj", `/CN=${h.name}`);
    await openssl("x509", "-req", "-in", `${h.name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${h.name}.crt`, "-days", "2", "-extfile", `${h.name}.ext`);
  }
}

function tlsClient(address: string, port: number, ca: Buffer, cred: { secretId: string; secretKey: string }): CvmClient {
  return new tencentcloud.cvm.v20170312.Client({
    credential: cred,
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `${address}:${port}`, protocol: "https://", reqTimeout: 60, agent: new Agent({ ca }) } },
  });
}

function tlsCommon(address: string, port: number, ca: Buffer, cred: { secretId: string; secretKey: string }): CommonClient {
  return new CommonClient(`${address}:${port}`, "2017-03-12", {
    credential: cred,
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `${address}:${port}`, protocol: "https://", reqTimeout: 60, agent: new Agent({ ca }) } },
  });
}

/** A port from 20000–29999 that nothing in either namespace is likely to hold. */
function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 10000);
}

/**
 * Brings the hosts up, starts agent A here (cdhtest) and agent B in cdhtest2, each configured
 * with the other as its migration peer, then links the subnet bridges. `env`: more settings for
 * both, `envA`/`envB` for one.
 */
export async function startTwoHosts(o: { repoRoot: string; env?: Record<string, string>; envA?: Record<string, string>; envB?: Record<string, string> }): Promise<TwoHosts> {
  await twoHostsUp(o.repoRoot);
  const machine = process.env.CDH_MACHINE_NS_PID;
  if (!machine) throw new Error("CDH_MACHINE_NS_PID is not set: run the tests through scripts/in-testns.sh (scripts/dev-it.sh)");
  // cdhtest2 serves the migration tests only: instances an interrupted run left there go.
  const inB = (...argv: string[]) => execa("nsenter", ["-t", machine, "-m", "-n", "--", "nsenter", `--net=/run/netns/${HOST_B.name}`, `--mount=/run/cdh-hosts/${HOST_B.name}.mnt`, "--", ...argv], { reject: false });
  for (const name of (await inB("virsh", "-c", "qemu:///system", "list", "--all", "--name")).stdout.split("\n").map((x) => x.trim())) {
    if (!/^ins-[a-z0-9]{8}$/.test(name)) continue;
    await inB("virsh", "-c", "qemu:///system", "destroy", name);
    await inB("virsh", "-c", "qemu:///system", "undefine", name, "--nvram");
  }
  const certDir = await mkdtemp(join(TEST_DATA_ROOT, "two-hosts-tls-"));
  await certificates(certDir);
  const caFile = join(certDir, "ca.crt");
  const ca = await readFile(caFile);
  const dataA = await makeDataDir();
  const dataB = await makeDataDir();
  const portA = randomPort();
  const portB = randomPort();
  const peer = (h: typeof HOST_A, port: number, dataDir: string) => ({
    host_id: hostIdFor(dataDir),
    endpoint: `https://${h.address}:${port}`,
    secret_id: h.secretId,
    secret_key: h.secretKey,
    ca_file: caFile,
    migration_address: h.address,
  });
  const envFor = (h: typeof HOST_A, other: ReturnType<typeof peer>) => ({
    CDH_AGENT_SECRET_ID: h.secretId,
    CDH_AGENT_SECRET_KEY: h.secretKey,
    CDH_AGENT_API_TLS_CERT: join(certDir, `${h.name}.crt`),
    CDH_AGENT_API_TLS_KEY: join(certDir, `${h.name}.key`),
    CDH_AGENT_MIGRATION_ADDRESS: h.address,
    CDH_AGENT_MIGRATION_PEERS: JSON.stringify([other]),
    CDH_AGENT_METRICS_LISTEN: "",
  });
  const a = await startAgentProcess({
    repoRoot: o.repoRoot,
    dataDir: dataA,
    port: portA,
    host: HOST_A.address,
    client: (port) => tlsClient(HOST_A.address, port, ca, HOST_A),
    env: { ...envFor(HOST_A, peer(HOST_B, portB, dataB)), ...o.env, ...o.envA },
  });
  let b: AgentProcess;
  try {
    b = await startAgentProcess({
      repoRoot: o.repoRoot,
      dataDir: dataB,
      port: portB,
      host: HOST_B.address,
      wrap: ["nsenter", "-t", machine, "-m", "-n", "--", "nsenter", `--net=/run/netns/${HOST_B.name}`, `--mount=/run/cdh-hosts/${HOST_B.name}.mnt`, "--"],
      client: (port) => tlsClient(HOST_B.address, port, ca, HOST_B),
      env: { ...envFor(HOST_B, peer(HOST_A, portA, dataA)), ...o.env, ...o.envB },
    });
  } catch (error) {
    await a.shutdown();
    throw error;
  }
  await run(o.repoRoot, "link");
  return {
    a,
    b,
    caFile,
    common: { a: tlsCommon(HOST_A.address, portA, ca, HOST_A), b: tlsCommon(HOST_B.address, portB, ca, HOST_B) },
    async shutdown() {
      await Promise.allSettled([a.shutdown(), b.shutdown()]);
    },
  };
}

/** The same agent again on its data directory and port (after a kill), with its TLS client. */
export function restartIn(h: TwoHosts, which: "a" | "b", extraEnv?: Record<string, string>): Promise<AgentProcess> {
  return h[which].restart(extraEnv);
}

/** `virsh list --all --name` on a host (B through the machine's namespaces). */
export async function domainsOn(host: "a" | "b"): Promise<string[]> {
  const argv = ["virsh", "-c", "qemu:///system", "list", "--all", "--name"];
  const r =
    host === "a"
      ? await execa(argv[0]!, argv.slice(1))
      : await execa("nsenter", ["-t", process.env.CDH_MACHINE_NS_PID!, "-m", "-n", "--", "nsenter", `--net=/run/netns/${HOST_B.name}`, `--mount=/run/cdh-hosts/${HOST_B.name}.mnt`, "--", ...argv]);
  return r.stdout.split("\n").map((s) => s.trim()).filter(Boolean);
}

/** The instance as one agent's DescribeInstances shows it, or undefined. */
export async function instanceOn(client: CvmClient, id: string): Promise<Record<string, unknown> | undefined> {
  const r = await client.DescribeInstances({ Limit: 100 });
  return (r.InstanceSet ?? []).find((i) => i.InstanceId === id) as Record<string, unknown> | undefined;
}
