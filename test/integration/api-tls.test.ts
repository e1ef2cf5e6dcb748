/**
 * The controller link over TLS, against the real agent process, with the official SDK
 * as the client: HTTPS (api_tls_cert/api_tls_key), mutual TLS (api_tls_client_ca: a
 * client without a certificate, or with one another CA signed, is refused at the
 * handshake), plain HTTP on a non-loopback address refused at start unless
 * api_allow_plain_http, and a certificate swapped on SIGHUP (a new connection sees the
 * new one; an open keep-alive connection goes on). Certificates are made here with the
 * openssl CLI.
 */
import { execa } from "execa";
import { copyFile, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { Agent } from "node:https";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { describeOn, fingerprint, makeCertificates, openTls } from "../support/tls.js";
import { freePort, makeDataDir, SECRET_ID, SECRET_KEY, startAgentProcess, type AgentProcess } from "../support/agent-process.js";

let dir = "";
const CREDENTIAL = { secretId: SECRET_ID, secretKey: SECRET_KEY };
let agent: AgentProcess | undefined;
const repoRoot = (): string => inject("repoRoot");

const file = (name: string) => join(dir, name);
const pem = (name: string) => readFile(file(name));

function tlsClient(port: number, agentOptions: ConstructorParameters<typeof Agent>[0]) {
  return new tencentcloud.cvm.v20170312.Client({
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "https://", reqTimeout: 30, agent: new Agent(agentOptions) } },
  });
}

/** The agent process's PID, found by its data directory in /proc. */
async function agentPid(dataDir: string): Promise<number> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const environ = await readFile(`/proc/${entry}/environ`, "latin1").catch(() => "");
    if (environ.split("\0").includes(`CDH_AGENT_DATA_DIR=${dataDir}`)) {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, "latin1").catch(() => "");
      if (cmdline.includes("cli.js")) return Number(entry);
    }
  }
  throw new Error(`no agent process for ${dataDir}`);
}

async function waitForLog(logFile: string, needle: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await readFile(logFile, "utf8")).includes(needle)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`"${needle}" did not appear in ${logFile} within ${timeoutMs} ms`);
}

/** Starts the agent with `env` and expects it to refuse to start; returns its output. */
async function refusedStart(env: Record<string, string>): Promise<{ exitCode: number | undefined; output: string }> {
  const dataDir = await makeDataDir();
  const r = await execa("node", [join(repoRoot(), "dist/agent/cli.js"), "run"], {
    env: {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      CDH_AGENT_DATA_DIR: dataDir,
      CDH_AGENT_SECRET_ID: SECRET_ID,
      CDH_AGENT_SECRET_KEY: SECRET_KEY,
      CDH_AGENT_HOST_ID: "host-tlstest1",
      ...env,
    },
    extendEnv: false,
    reject: false,
    timeout: 60_000,
  });
  return { exitCode: r.exitCode, output: `${r.stdout}\n${r.stderr}` };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cdh-tls-"));
  await makeCertificates(dir);
  await copyFile(file("server1.crt"), file("api.crt"));
  await copyFile(file("server1.key"), file("api.key"));
});

afterAll(async () => {
  await agent?.shutdown();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("the API over TLS", () => {
  it("serves the official SDK over https, and nothing over plain HTTP on the same port", async () => {
    agent = await startAgentProcess({
      repoRoot: repoRoot(),
      env: { CDH_AGENT_API_TLS_CERT: file("api.crt"), CDH_AGENT_API_TLS_KEY: file("api.key") },
    });
    const r = await tlsClient(agent.port, { ca: await pem("ca.crt") }).DescribeInstances({});
    expect(r.TotalCount).toBe(0);
    expect(r.RequestId).toMatch(/^[0-9a-f-]{36}$/);
    // The plain-HTTP client of the suite gets no CVM answer from a TLS port.
    await expect(agent.client.DescribeInstances({})).rejects.toThrow();
    // A client that does not trust the CA refuses the server.
    await expect(tlsClient(agent.port, {}).DescribeInstances({})).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
  });

  it("with api_tls_client_ca, serves a controller whose certificate the CA signed and refuses others at the handshake", async () => {
    await agent?.kill("SIGTERM");
    agent = await startAgentProcess({
      repoRoot: repoRoot(),
      env: { CDH_AGENT_API_TLS_CERT: file("api.crt"), CDH_AGENT_API_TLS_KEY: file("api.key"), CDH_AGENT_API_TLS_CLIENT_CA: file("ca.crt") },
    });
    const ca = await pem("ca.crt");
    const ok = await tlsClient(agent.port, { ca, cert: await pem("client.crt"), key: await pem("client.key") }).DescribeInstances({});
    expect(ok.TotalCount).toBe(0);

    const noCert = await tlsClient(agent.port, { ca }).DescribeInstances({}).then(
      () => "answered",
      (e: Error & { code?: string }) => e,
    );
    expect(noCert).not.toBe("answered");
    // Refused by TLS (an alert or a reset), never a CVM answer with a code.
    expect((noCert as { requestId?: string }).requestId || undefined).toBeUndefined();
    expect((noCert as { code?: string }).code).toBeUndefined();
    expect(String((noCert as Error).message)).toMatch(/certificate|alert|socket hang up|ECONNRESET|handshake/i);

    const stranger = await tlsClient(agent.port, { ca, cert: await pem("stranger.crt"), key: await pem("stranger.key") })
      .DescribeInstances({})
      .then(
        () => "answered",
        (e: Error) => e,
      );
    expect(stranger).not.toBe("answered");
    expect((stranger as { requestId?: string }).requestId || undefined).toBeUndefined();
    expect((stranger as { code?: string }).code).toBeUndefined();

    // At the TLS level: the handshake (or the first read after it, in TLS 1.3) fails without a certificate.
    const outcome = await new Promise<string>((resolve) => {
      const s = tlsConnect({ host: "127.0.0.1", port: agent!.port, ca }, () => {
        s.write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
      });
      s.on("data", () => resolve("data"));
      s.once("error", (e) => resolve(`error: ${e.message}`));
      s.once("close", () => resolve("closed"));
    });
    expect(outcome).not.toBe("data");
  });

  it("swaps the certificate on SIGHUP: a new connection sees the new one, an open keep-alive connection goes on", async () => {
    const port = agent!.port;
    const ca = await pem("ca.crt");
    const client = { ca, cert: await pem("client.crt"), key: await pem("client.key") };
    const open = await openTls(port, client);
    expect((await describeOn(open, port, CREDENTIAL)).Response.TotalCount).toBe(0);
    const before = open.getPeerCertificate().fingerprint256.toUpperCase();
    expect(before).toBe(await fingerprint(file("server1.crt")));

    await copyFile(file("server2.crt"), file("api.crt"));
    await copyFile(file("server2.key"), file("api.key"));
    process.kill(await agentPid(agent!.dataDir), "SIGHUP");
    await waitForLog(agent!.logFile, "API TLS certificate reloaded");

    const fresh = await openTls(port, client);
    expect(fresh.getPeerCertificate().fingerprint256.toUpperCase()).toBe(await fingerprint(file("server2.crt")));
    expect((await describeOn(fresh, port, CREDENTIAL)).Response.TotalCount).toBe(0);
    fresh.destroy();
    // The connection made before the reload is still open and still answered.
    expect(open.destroyed).toBe(false);
    expect((await describeOn(open, port, CREDENTIAL)).Response.TotalCount).toBe(0);
    open.destroy();
    // The SDK, too, on the new certificate.
    expect((await tlsClient(port, client).DescribeInstances({})).TotalCount).toBe(0);
    // The agent is still the same process (SIGHUP did not stop it).
    expect(await agentPid(agent!.dataDir)).toBeGreaterThan(0);
  });
});

describe("plain HTTP off loopback", () => {
  it("refuses to start on a non-loopback address of the test host without TLS, saying why", async () => {
    // An address of the test host (the test network's gateway, once an agent has defined it), else 0.0.0.0.
    const nsAddress =
      Object.values(networkInterfaces())
        .flat()
        .find((a) => a && a.family === "IPv4" && !a.internal)?.address ?? "0.0.0.0";
    const port = await freePort();
    const r = await refusedStart({ CDH_AGENT_API_LISTEN: `${nsAddress}:${port}` });
    expect(r.exitCode).not.toBe(0);
    expect(r.output).toContain("api_listen");
    expect(r.output).toContain(`${nsAddress} is not a loopback address and the API has no TLS`);
    expect(r.output).toContain("api_allow_plain_http");
  });

  it("starts on a non-loopback address with api_allow_plain_http true", async () => {
    await agent?.shutdown();
    agent = undefined;
    // 0.0.0.0 is not a loopback address; the suite's client still reaches it on 127.0.0.1.
    const port = await freePort();
    agent = await startAgentProcess({ repoRoot: repoRoot(), port, env: { CDH_AGENT_API_LISTEN: `0.0.0.0:${port}`, CDH_AGENT_API_ALLOW_PLAIN_HTTP: "true" } });
    expect((await agent.client.DescribeInstances({})).TotalCount).toBe(0);
  });
});
