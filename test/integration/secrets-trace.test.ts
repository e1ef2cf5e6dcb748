/**
 * No secret on any command line, in any child's environment or in the log: strace follows
 * every execve of a running agent (and of its children) through a RunInstances with a
 * password and user data, a key pair made by the agent, a password reset of a running and
 * of a stopped instance and a key binding; then no traced argv or environment, and no line
 * of the agent's log, holds any of the secrets, in any of the forms they travel in.
 */
import { readdir, readFile } from "node:fs/promises";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, SECRET_KEY, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { linesWithRepeatedKeys } from "../support/log-lines.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

/** The PID of the agent whose data directory is `dataDir` (read from /proc). */
async function agentPid(dataDir: string): Promise<number> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8");
      if (!cmdline.includes("dist/agent/cli.js")) continue;
      const environ = (await readFile(`/proc/${entry}/environ`, "utf8")).split("\0");
      if (environ.includes(`CDH_AGENT_DATA_DIR=${dataDir}`)) return Number(entry);
    } catch {
      // A process that ended while the loop read it.
    }
  }
  throw new Error(`no agent process with data directory ${dataDir}`);
}

async function waitForOperation(agent: AgentProcess, id: string, operation: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const i = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    last = `${i.LatestOperation} ${i.LatestOperationState} ${i.InstanceState}`;
    if (i.LatestOperation === operation && i.LatestOperationState === "SUCCESS") return;
    if (i.LatestOperation === operation && i.LatestOperationState === "FAILED") throw new Error(`${operation} failed: ${last}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${operation} did not succeed within ${timeoutMs} ms (last: ${last})`);
}

describe("secrets stay off command lines and out of the log", () => {
  let agent: AgentProcess;
  let imageId: string;
  let strace: ResultPromise | undefined;
  const traceFile = `/tmp/cdh-secrets-trace-${process.pid}.txt`;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot") });
    imageId = await importImage(agent.client, images.raw.normal, "secrets-tiny");
    const pid = await agentPid(agent.dataDir);
    // -f: the agent's threads and every child; -v: environments in full; -s: whole strings.
    strace = execa("strace", ["-f", "-v", "-qq", "-e", "trace=execve", "-s", "1048576", "-o", traceFile, "-p", String(pid)], {
      reject: false,
    });
    // strace attaches within a moment; it must still be running then (ptrace allowed).
    await new Promise((r) => setTimeout(r, 1500));
    expect(strace.exitCode).toBeNull(); // still running: attached, not refused
  });

  afterAll(async () => {
    strace?.kill("SIGINT");
    await strace;
    await agent?.shutdown();
  });

  it("never shows a password, a hash, user data, a private key or the SecretKey", async () => {
    const runPassword = "Run-Secret-Pw1";
    const resetRunning = "Reset-Live-Pw2";
    const resetStopped = "Reset-Stop-Pw3";
    const userDataText = "#cloud-config\n# user-data-marker-7f3a9c\nruncmd: [echo hi]\n";
    const userData = Buffer.from(userDataText).toString("base64");

    const key = await agent.client.CreateKeyPair({ KeyName: "secrets_key", ProjectId: 0 });
    const privateKey = key.KeyPair!.PrivateKey!;
    expect(privateKey).toMatch(/PRIVATE KEY/);

    const run = await agent.client.RunInstances({
      InstanceType: "CDH_1C1G",
      ImageId: imageId,
      SystemDisk: { DiskSize: 1 },
      InstanceName: "secrets",
      LoginSettings: { Password: runPassword },
      UserData: userData,
    });
    const id = run.InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");

    // Running: the agent tries the guest agent, then (ForceStop) stops, applies and starts.
    await agent.client.ResetInstancesPassword({ InstanceIds: [id], Password: resetRunning, ForceStop: true });
    await waitForOperation(agent, id, "ResetInstancesPassword");
    await waitForState(agent.client, id, "RUNNING", 60_000);
    const hashes: string[] = [];
    const recordHash = async () => {
      const xml = (await virsh("dumpxml", "--domain", id, "--inactive")).stdout;
      const m = /"passwordHash":"([^"]+)"/.exec(xml.replace(/&quot;/g, '"'));
      expect(m).not.toBeNull();
      hashes.push(m![1]!);
    };
    await recordHash();

    await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(agent.client, id, "STOPPED", 60_000);
    await agent.client.ResetInstancesPassword({ InstanceIds: [id], Password: resetStopped });
    await waitForOperation(agent, id, "ResetInstancesPassword");
    await recordHash();

    await agent.client.AssociateInstancesKeyPairs({ InstanceIds: [id], KeyIds: [key.KeyPair!.KeyId!] });
    await waitForOperation(agent, id, "AssociateInstancesKeyPairs");

    strace!.kill("SIGINT");
    await strace;
    strace = undefined;
    const trace = await readFile(traceFile, "utf8");
    const execs = trace.split("\n").filter((l) => l.includes("execve("));
    // The trace saw the agent's commands, among them the record and guest-agent calls on stdin.
    expect(execs.some((l) => l.includes('"virsh", "-q", "-c"'))).toBe(true);
    expect(execs.some((l) => /"virsh", "-c", "qemu:\/\/\/system", "(start|define)"/.test(l))).toBe(true);
    expect(execs.length).toBeGreaterThan(10);

    const pemBody = privateKey.split("\n").filter((l) => l && !l.startsWith("-----"));
    const secrets: Record<string, string> = {
      runPassword,
      resetRunning,
      resetStopped,
      "base64 of a password": Buffer.from(resetRunning).toString("base64"),
      "user data (base64)": userData,
      "user data (text)": "user-data-marker-7f3a9c",
      "private key line": pemBody[3]!,
      "API SecretKey": SECRET_KEY,
      "hash after the live reset": hashes[0]!,
      "hash after the stopped reset": hashes[1]!,
      "hash salt": hashes[1]!.split("$")[2]!,
    };
    const log = await readFile(agent.logFile, "utf8");
    expect(log.split("\n").length).toBeGreaterThan(20);
    for (const [what, secret] of Object.entries(secrets)) {
      expect(secret.length, what).toBeGreaterThan(5);
      const inArgv = execs.filter((l) => l.includes(secret));
      expect(inArgv.map((l) => l.slice(0, 200)), `${what} in an execve`).toEqual([]);
      expect(log.includes(secret), `${what} in the agent's log`).toBe(false);
    }
    // The same log, read as text: no line repeats a key (JSON.parse would hide it).
    expect(linesWithRepeatedKeys(log).map((l) => `${l.repeated.join(",")}: ${l.line.slice(0, 160)}`)).toEqual([]);
  });
});
