import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ExecError, type RunOptions } from "../../../drivers/exec/runner.js";
import { buildDomainXml } from "../../../drivers/libvirt/domain-xml.js";
import { DomainStateError, LibvirtUnavailableError } from "../../../drivers/libvirt/types.js";
import { VirshHypervisor } from "../../../drivers/libvirt/virsh.js";
import { RecordingRunner, type Reply } from "../../support/recording-runner.js";
import { biosKvmSpec } from "./specs.js";

const URI = "qemu:///system";
const NAME = biosKvmSpec.name;
const v = (...args: string[]) => ["virsh", "-c", URI, ...args];
const POLICY = { checkAfterMs: 1_000, checkEveryMs: 1_000, silentLimitMs: 4_000, overallMs: 10_000, lookTimeoutMs: 500 };

/**
 * A virsh call that libvirt has not answered yet: it ends when the test says, or
 * (like the real runner) with an "aborted" ExecError when its signal is aborted.
 */
function slowCall() {
  let finish!: (reply: Reply) => void;
  let signal: AbortSignal | undefined;
  const responder = (argv: readonly string[], options: RunOptions | undefined) =>
    new Promise<Reply>((resolve, reject) => {
      signal = options?.signal;
      finish = resolve;
      if (!signal) return reject(new Error("a state-changing call must be cancellable"));
      signal.addEventListener("abort", () => reject(new ExecError({ command: argv, exitCode: null, stdout: "", stderr: "", failure: "aborted" })));
    });
  return {
    responder,
    finish: (reply: Reply = {}) => finish(reply),
    aborted: () => signal?.aborted ?? false,
  };
}

/** Settles `promise` while fake time runs on in steps; returns how it ended. */
async function settle<T>(promise: Promise<T>, stepMs = 250, maxMs = 60_000): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  let result: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
  promise.then(
    (value) => (result = { ok: true, value }),
    (error: unknown) => (result = { ok: false, error }),
  );
  for (let t = 0; t <= maxMs && result === undefined; t += stepMs) {
    await vi.advanceTimersByTimeAsync(stepMs);
  }
  if (result === undefined) throw new Error(`still pending after ${maxMs} ms of fake time`);
  return result;
}

describe("state-changing virsh calls under a deadline", () => {
  let runner: RecordingRunner;
  let tmpDir: string;
  let hv: VirshHypervisor;
  const warnings: string[] = [];

  beforeEach(async () => {
    // Only the clock and timeouts are fake; the define tests (real temporary files) need no fake time.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    runner = new RecordingRunner();
    tmpDir = await mkdtemp(join(tmpdir(), "state-change-unit-"));
    warnings.length = 0;
    hv = new VirshHypervisor({
      runner,
      uri: URI,
      tmpDir,
      kvmUsable: async () => false,
      stateChange: POLICY,
      logger: { debug: () => undefined, info: () => undefined, warn: (_o, msg) => warnings.push(msg) },
    });
  });
  afterEach(async () => {
    vi.useRealTimers();
    await rm(tmpDir, { recursive: true, force: true });
  });

  const domstates = () => runner.commands.filter((c) => c[3] === "domstate").length;

  it("a start that libvirt finishes after the deadline succeeds: the driver looks, sees the domain running and lets virsh go", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    runner.once(v("domstate", "--domain", NAME), { stdout: "shut off\n" });
    runner.once(v("domstate", "--domain", NAME), { stdout: "paused\n" });
    runner.once(v("domstate", "--domain", NAME), { stdout: "running\n" });

    const r = await settle(hv.start(NAME));
    expect(r).toEqual({ ok: true, value: undefined });
    expect(domstates()).toBe(3);
    expect(start.aborted()).toBe(true);
    expect(warnings).toEqual(["libvirt is slow to answer; waiting for it"]);
  });

  it("a start still queued in libvirt keeps waiting while libvirt answers, and ends with virsh's own answer", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    runner.on(v("domstate", "--domain", NAME), { stdout: "shut off\n" });
    const p = hv.start(NAME);
    await vi.advanceTimersByTimeAsync(7_500); // well past the deadline (1 s): still waiting
    expect(domstates()).toBeGreaterThanOrEqual(5);
    start.finish({ stdout: "Domain started\n" });
    expect(await settle(p)).toEqual({ ok: true, value: undefined });
    expect(start.aborted()).toBe(false);
  });

  it("gives up at the overall bound and fails, saying what the domain shows", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    runner.on(v("domstate", "--domain", NAME), { stdout: "shut off\n" });
    const r = await settle(hv.start(NAME));
    expect(r.ok).toBe(false);
    const error = (r as { error: unknown }).error;
    expect(error).toBeInstanceOf(LibvirtUnavailableError);
    expect((error as Error).message).toMatch(/^virsh start ins-\w+: libvirt did not finish it in 10 s; the domain shows it not done \(shut off\)$/);
    expect(start.aborted()).toBe(true);
  });

  it("gives up when libvirt answers nothing for the silent limit: the outcome is unknown", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    runner.on(v("domstate", "--domain", NAME), { failure: "timeout" });
    const r = await settle(hv.start(NAME));
    expect(r.ok).toBe(false);
    const error = (r as { error: unknown }).error as Error;
    expect(error).toBeInstanceOf(LibvirtUnavailableError);
    expect(error.message).toMatch(/libvirt answered nothing for [\d.]+ s, and libvirt does not answer .*the outcome is unknown/);
    expect(start.aborted()).toBe(true);
  });

  it("a start given up while libvirt was silent goes on being looked at while the domain is paused mid-start, and succeeds once it runs", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    // libvirt answers no look until the silent limit (4 s), then shows the domain paused twice, then running.
    runner.on(v("domstate", "--domain", NAME), { failure: "timeout" }, { times: 4 });
    runner.on(v("domstate", "--domain", NAME), { stdout: "paused\n" }, { times: 2 });
    runner.on(v("domstate", "--domain", NAME), { stdout: "running\n" });
    expect(await settle(hv.start(NAME))).toEqual({ ok: true, value: undefined });
    expect(start.aborted()).toBe(true);
    expect(domstates()).toBe(7);
  });

  it("a start whose domain stays paused fails at the overall bound", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    runner.on(v("domstate", "--domain", NAME), { stdout: "paused\n" });
    const r = await settle(hv.start(NAME));
    expect(((r as { error: Error }).error).message).toMatch(/did not finish it in 10 s; the domain shows it not done \(paused\)/);
  });

  it("a define whose virsh timed out counts as done when the persistent definition is the one asked for", async () => {
    runner.on((argv) => argv[3] === "define", { failure: "timeout" });
    runner.on(v("domstate", "--domain", NAME), { stdout: "shut off\n" });
    runner.on(v("dumpxml", "--domain", NAME, "--inactive"), { stdout: buildDomainXml(biosKvmSpec) });
    await expect(hv.defineDomain(biosKvmSpec)).resolves.toBeUndefined();
  });

  it("a define whose virsh timed out fails when the persistent definition is an older one", async () => {
    runner.on((argv) => argv[3] === "define", { failure: "timeout" });
    runner.on(v("domstate", "--domain", NAME), { stdout: "shut off\n" });
    runner.on(v("dumpxml", "--domain", NAME, "--inactive"), { stdout: buildDomainXml({ ...biosKvmSpec, memoryMiB: biosKvmSpec.memoryMiB * 2 }) });
    const error = await hv.defineDomain(biosKvmSpec).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(LibvirtUnavailableError);
    expect((error as Error).message).toMatch(/^virsh define ins-\w+: libvirt did not answer in time; the domain shows it not done \(shut off, persistent definition read\)/);
  });

  it("a connection lost after the call was sent is decided by a look: a domain seen running was started", async () => {
    runner.on(v("start", "--domain", NAME), { exitCode: 1, stderr: "error: End of file while reading data: Input/output error\n" });
    runner.on(v("domstate", "--domain", NAME), { stdout: "running\n" });
    expect(await settle(hv.start(NAME))).toEqual({ ok: true, value: undefined });
  });

  it("a connection never made is a certain failure: no look", async () => {
    runner.on(v("start", "--domain", NAME), { exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory\n" });
    const r = await settle(hv.start(NAME));
    expect((r as { error: unknown }).error).toBeInstanceOf(LibvirtUnavailableError);
    expect(runner.commands).toEqual([v("start", "--domain", NAME)]);
  });

  it("a refusal by libvirt is the call's own answer, at once and without a look", async () => {
    runner.on(v("start", "--domain", NAME), { exitCode: 1, stderr: "error: Requested operation is not valid: domain is already active\n" });
    const r = await settle(hv.start(NAME));
    expect((r as { error: unknown }).error).toBeInstanceOf(DomainStateError);
    expect(runner.commands).toEqual([v("start", "--domain", NAME)]);
  });

  it("a destroy that timed out succeeds when the domain is seen off, and one of a domain already off is no error", async () => {
    runner.once(v("destroy", "--domain", NAME), { failure: "timeout" });
    runner.once(v("domstate", "--domain", NAME), { stdout: "shut off\n" });
    expect(await settle(hv.destroy(NAME))).toEqual({ ok: true, value: undefined });
    runner.once(v("destroy", "--domain", NAME), { exitCode: 1, stderr: "error: Requested operation is not valid: domain is not running\n" });
    expect(await settle(hv.destroy(NAME))).toEqual({ ok: true, value: undefined });
    expect(runner.commands).toHaveLength(3);
  });

  it("an undefine that timed out succeeds when the domain is gone", async () => {
    runner.on((argv) => argv[3] === "undefine", { failure: "timeout" });
    runner.on(v("domstate", "--domain", NAME), { exitCode: 1, stderr: `error: failed to get domain '${NAME}'\n` });
    expect(await settle(hv.undefine(NAME))).toEqual({ ok: true, value: undefined });
  });

  it("a reboot that timed out fails once libvirt answers: a look cannot see a reboot", async () => {
    runner.on((argv) => argv[3] === "reboot", { failure: "timeout" });
    runner.on(v("domstate", "--domain", NAME), { stdout: "running\n" });
    const r = await settle(hv.reboot(NAME));
    expect((r as { error: unknown }).error).toBeInstanceOf(LibvirtUnavailableError);
  });

  it("runs the call cancellable with a backstop timeout past the bounds, and each look with the look timeout", async () => {
    const start = slowCall();
    runner.on(v("start", "--domain", NAME), start.responder);
    runner.on(v("domstate", "--domain", NAME), { stdout: "running\n" });
    await settle(hv.start(NAME));
    const [call, look] = runner.runs;
    expect(call?.options?.timeoutMs).toBe(POLICY.overallMs + POLICY.silentLimitMs);
    expect(call?.options?.signal).toBeInstanceOf(AbortSignal);
    expect(look?.options?.timeoutMs).toBe(POLICY.lookTimeoutMs);
  });
});
