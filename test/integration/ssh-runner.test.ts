import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExecError } from "../../drivers/exec/runner.js";
import { SshRunner, type SshRunnerOptions } from "../../drivers/exec/ssh.js";
import { startSshd, type TestSshd } from "../support/sshd.js";

let sshd: TestSshd;
let runner: SshRunner;

function optionsFor(server: TestSshd, extra: Partial<SshRunnerOptions> = {}): SshRunnerOptions {
  return {
    host: server.host,
    port: server.port,
    username: server.username,
    privateKey: server.privateKey,
    hostKeyFingerprint: server.hostKeyFingerprint,
    defaultTimeoutMs: 20_000,
    ...extra,
  };
}

async function failureOf(promise: Promise<unknown>): Promise<ExecError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ExecError);
  return error as ExecError;
}

/** Processes whose command line contains `marker` (they run on this same machine). */
async function processesMatching(marker: string): Promise<string[]> {
  const result = await execa("pgrep", ["-f", marker], { reject: false });
  return result.stdout.split("\n").filter(Boolean);
}

beforeAll(async () => {
  sshd = await startSshd();
  runner = new SshRunner(optionsFor(sshd));
});

afterAll(async () => {
  await runner?.close();
  await sshd?.stop();
});

describe("SshRunner against a real sshd", () => {
  it("passes awkward arguments to echo byte-exact", async () => {
    const args = ["two  spaces", "it's", '"double"', "$HOME", "`id`", "$(id)", "a\nb", "", "*", "back\\slash", "ü✓"];
    const result = await runner.run(["echo", ...args]);
    expect(result.stdout).toBe(`${args.join(" ")}\n`);
    expect(result.exitCode).toBe(0);
    const split = await runner.run(["printf", "%s\\0", ...args]);
    expect(split.stdout.split("\0").slice(0, -1)).toEqual(args);
  });

  it("writes input to the remote command's stdin", async () => {
    const input = "first line\nsecond 'line' with $dollar\n";
    const result = await runner.run(["cat"], { input });
    expect(result.stdout).toBe(input);
    const bytes = await runner.run(["od", "-An", "-tx1"], { input: Buffer.from([0, 255, 10]) });
    expect(bytes.stdout.trim()).toBe("00 ff 0a");
  });

  it("closes stdin when there is no input", async () => {
    const result = await runner.run(["cat"], { timeoutMs: 5_000 });
    expect(result.stdout).toBe("");
  });

  it("throws ExecError with the exit code and stderr on a non-zero exit", async () => {
    const error = await failureOf(runner.run(["sh", "-c", "echo partial; echo 'no such domain' >&2; exit 3"]));
    expect(error.failure).toBe("exit");
    expect(error.exitCode).toBe(3);
    expect(error.stdout).toBe("partial\n");
    expect(error.stderr).toBe("no such domain\n");
    expect(error.command).toEqual(["sh", "-c", "echo partial; echo 'no such domain' >&2; exit 3"]);
  });

  it("returns the exit code when failure is allowed", async () => {
    const result = await runner.run(["sh", "-c", "exit 5"], { allowFailure: true });
    expect(result.exitCode).toBe(5);
  });

  it("reports a missing remote program as failure spawn", async () => {
    const error = await failureOf(runner.run(["/nonexistent/program-z"]));
    expect(error.failure).toBe("spawn");
    expect(error.exitCode).toBe(127);
  });

  it("passes env and cwd to the remote command", async () => {
    const result = await runner.run(["sh", "-c", 'echo "$CDH_X"; pwd'], { env: { CDH_X: "it's $here" }, cwd: "/tmp" });
    expect(result.stdout).toBe("it's $here\n/tmp\n");
  });

  it("times out a remote command and stops it", async () => {
    const started = Date.now();
    const error = await failureOf(runner.run(["sh", "-c", "sleep 31.17; echo never"], { timeoutMs: 500 }));
    expect(error.failure).toBe("timeout");
    expect(Date.now() - started).toBeLessThan(5_000);
    await expect.poll(() => processesMatching("sleep 31.17"), { timeout: 5_000 }).toEqual([]);
  });

  it("kills a remote command that ignores SIGTERM after the grace period", async () => {
    const started = Date.now();
    const error = await failureOf(
      runner.run(["sh", "-c", "trap '' TERM; echo started; while :; do sleep 0.1; done; : 31.29"], { timeoutMs: 300 }),
    );
    expect(error.failure).toBe("timeout");
    expect(error.stdout).toBe("started\n");
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
    expect(Date.now() - started).toBeLessThan(6_000);
    await expect.poll(() => processesMatching(": 31.29"), { timeout: 5_000 }).toEqual([]);
  });

  it("aborts a remote command when the signal fires", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const error = await failureOf(runner.run(["sleep", "31.23"], { signal: controller.signal }));
    expect(error.failure).toBe("aborted");
    await expect.poll(() => processesMatching("sleep 31.23"), { timeout: 5_000 }).toEqual([]);
  });

  it("runs more commands at once than sshd allows sessions", async () => {
    const results = await Promise.all(
      Array.from({ length: 14 }, (_, i) => runner.run(["sh", "-c", `sleep 0.3; echo ${i}`])),
    );
    expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 14 }, (_, i) => `${i}\n`));
  });

  it("streams stdout line by line and reports the exit", async () => {
    const lines: string[] = [];
    const errors: string[] = [];
    const exit = await new Promise<{ exitCode: number | null; signal: string | null }>((resolve) => {
      runner.stream(["sh", "-c", "printf 'one\\ntw'; sleep 0.3; printf 'o\\nthree'; echo warn >&2; exit 2"], {
        onLine: (line) => lines.push(line),
        onStderrLine: (line) => errors.push(line),
        onExit: resolve,
      });
    });
    expect(lines).toEqual(["one", "two", "three"]);
    expect(errors).toEqual(["warn"]);
    expect(exit).toEqual({ exitCode: 2, signal: null });
  });

  it("stops a streamed command with kill() and calls onExit once", async () => {
    const lines: string[] = [];
    let exits = 0;
    let resolveExit!: () => void;
    const exited = new Promise<void>((resolve) => (resolveExit = resolve));
    const handle = runner.stream(["sh", "-c", "echo ready; exec sleep 31.41"], {
      onLine: (line) => lines.push(line),
      onExit: () => {
        exits += 1;
        resolveExit();
      },
    });
    await expect.poll(() => lines).toEqual(["ready"]);
    handle.kill();
    handle.kill();
    await exited;
    await new Promise((r) => setTimeout(r, 200));
    expect(exits).toBe(1);
    await expect.poll(() => processesMatching("sleep 31.41"), { timeout: 5_000 }).toEqual([]);
  });

  it("refuses a host whose key does not match the fingerprint", async () => {
    const wrong = new SshRunner(optionsFor(sshd, { hostKeyFingerprint: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }));
    const logins = sshd.acceptedLogins();
    const error = await failureOf(wrong.run(["echo", "should not run"]));
    expect(error.failure).toBe("spawn");
    expect(String((error.cause as Error).message)).toContain(`SHA256:${sshd.hostKeyFingerprint}`);
    expect(sshd.acceptedLogins()).toBe(logins);
    await wrong.close();
  });

  it("reports a refused connection to a stream through onExit", async () => {
    const wrong = new SshRunner(optionsFor(sshd, { hostKeyFingerprint: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }));
    const info = await new Promise<{ exitCode: number | null; error?: Error }>((resolve) => {
      wrong.stream(["echo", "x"], { onLine: () => {}, onExit: resolve });
    });
    expect(info.exitCode).toBeNull();
    expect(info.error).toBeInstanceOf(ExecError);
    expect((info.error as ExecError).failure).toBe("spawn");
    await wrong.close();
  });

  it("accepts the fingerprint with its SHA256: prefix", async () => {
    const prefixed = new SshRunner(optionsFor(sshd, { hostKeyFingerprint: `SHA256:${sshd.hostKeyFingerprint}` }));
    expect((await prefixed.run(["echo", "ok"])).stdout).toBe("ok\n");
    await prefixed.close();
  });

  it("reuses one connection across runs and opens a new one after close()", async () => {
    const own = new SshRunner(optionsFor(sshd));
    const before = sshd.acceptedLogins();
    await own.run(["true"]);
    await own.run(["echo", "again"]);
    await Promise.all([own.run(["true"]), own.run(["true"])]);
    await expect.poll(() => sshd.acceptedLogins()).toBe(before + 1);
    await own.close();
    expect((await own.run(["echo", "back"])).stdout).toBe("back\n");
    await expect.poll(() => sshd.acceptedLogins()).toBe(before + 2);
    await own.close();
  });

  it("reconnects after the server drops the connection", async () => {
    const own = new SshRunner(optionsFor(sshd));
    const before = sshd.acceptedLogins();
    const pid = (await own.run(["sh", "-c", "echo $PPID"])).stdout.trim();
    // $PPID is the per-connection sshd process; killing it drops the connection.
    process.kill(Number(pid), "SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    expect((await own.run(["echo", "reconnected"])).stdout).toBe("reconnected\n");
    expect(sshd.acceptedLogins()).toBe(before + 2);
    await own.close();
  });
});
