import { mkdtemp, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRunner } from "../../../drivers/exec/local.js";
import { ExecError } from "../../../drivers/exec/runner.js";

async function failureOf(promise: Promise<unknown>): Promise<ExecError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ExecError);
  return error as ExecError;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("LocalRunner.run", () => {
  const runner = new LocalRunner({ defaultTimeoutMs: 10_000 });
  let dir: string;
  beforeAll(async () => {
    dir = await realpath(await mkdtemp(join(tmpdir(), "cdh-exec-")));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("passes arguments to the program without a shell", async () => {
    const result = await runner.run(["printf", "%s|", "$HOME", "a b", "`id`", ""]);
    expect(result.stdout).toBe("$HOME|a b|`id`||");
    expect(result.exitCode).toBe(0);
    expect(result.command).toEqual(["printf", "%s|", "$HOME", "a b", "`id`", ""]);
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
  });

  it("keeps stdout and stderr verbatim, final newline included", async () => {
    const result = await runner.run(["/bin/sh", "-c", "echo out; echo err >&2"]);
    expect(result.stdout).toBe("out\n");
    expect(result.stderr).toBe("err\n");
  });

  it("writes text input to stdin", async () => {
    const result = await runner.run(["cat"], { input: "line 1\nline 2\n" });
    expect(result.stdout).toBe("line 1\nline 2\n");
  });

  it("writes buffer input to stdin", async () => {
    const result = await runner.run(["od", "-An", "-tx1"], { input: Buffer.from([0, 255, 10]) });
    expect(result.stdout.trim()).toBe("00 ff 0a");
  });

  it("gives the command an empty stdin when there is no input", async () => {
    const result = await runner.run(["cat"], { timeoutMs: 5_000 });
    expect(result.stdout).toBe("");
  });

  it("throws ExecError with exit code and stderr on a non-zero exit", async () => {
    const error = await failureOf(runner.run(["/bin/sh", "-c", "echo partial; echo 'disk is full' >&2; exit 3"]));
    expect(error.failure).toBe("exit");
    expect(error.exitCode).toBe(3);
    expect(error.signal).toBeNull();
    expect(error.stdout).toBe("partial\n");
    expect(error.stderr).toBe("disk is full\n");
    expect(error.command[0]).toBe("/bin/sh");
    expect(error.message).toContain("exited with code 3: disk is full");
  });

  it("returns the exit code instead of throwing when failure is allowed", async () => {
    const result = await runner.run(["/bin/sh", "-c", "echo nope >&2; exit 3"], { allowFailure: true });
    expect(result.exitCode).toBe(3);
    expect(result.stderr).toBe("nope\n");
  });

  it("throws failure spawn for a missing program, also when failure is allowed", async () => {
    const error = await failureOf(runner.run(["/nonexistent/program-x"], { allowFailure: true }));
    expect(error.failure).toBe("spawn");
    expect(error.exitCode).toBeNull();
    expect(error.message).toContain("could not be started");
  });

  it("kills a command that runs past its timeout", async () => {
    const started = Date.now();
    const error = await failureOf(runner.run(["sleep", "30"], { timeoutMs: 300 }));
    expect(error.failure).toBe("timeout");
    expect(error.signal).toBe("SIGTERM");
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("uses the runner's default timeout", async () => {
    const quick = new LocalRunner({ defaultTimeoutMs: 300 });
    const error = await failureOf(quick.run(["sleep", "30"]));
    expect(error.failure).toBe("timeout");
  });

  it("kills a command that ignores SIGTERM after the grace period", async () => {
    const started = Date.now();
    const error = await failureOf(
      runner.run(["/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], { timeoutMs: 200 }),
    );
    expect(error.failure).toBe("timeout");
    expect(error.signal).toBe("SIGKILL");
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
    expect(Date.now() - started).toBeLessThan(8_000);
  });

  it("kills a command when its signal is aborted", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const error = await failureOf(runner.run(["sleep", "30"], { signal: controller.signal }));
    expect(error.failure).toBe("aborted");
  });

  it("does not start a command whose signal is already aborted", async () => {
    const error = await failureOf(runner.run(["touch", join(dir, "never")], { signal: AbortSignal.abort() }));
    expect(error.failure).toBe("aborted");
  });

  it("reports a command killed by a signal", async () => {
    const error = await failureOf(runner.run(["/bin/sh", "-c", "kill -KILL $$"]));
    expect(error.failure).toBe("signal");
    expect(error.signal).toBe("SIGKILL");
    expect(error.message).toContain("killed by SIGKILL");
  });

  it("adds env to the inherited environment and runs in cwd", async () => {
    const result = await runner.run(["/bin/sh", "-c", 'echo "$CDH_TEST_VAR"; pwd; test -n "$PATH"'], {
      env: { CDH_TEST_VAR: "it's set" },
      cwd: dir,
    });
    expect(result.stdout).toBe(`it's set\n${dir}\n`);
  });

  it("logs every command at debug level", async () => {
    const entries: Array<{ obj: object; msg: string }> = [];
    const logged = new LocalRunner({ logger: { debug: (obj, msg) => entries.push({ obj, msg }) } });
    await logged.run(["true"]);
    await logged.run(["false"], { allowFailure: true });
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({ obj: { command: "true", exitCode: 0 }, msg: "command finished" });
    expect(entries[1]).toMatchObject({ obj: { command: "false", exitCode: 1 } });
  });

  it("refuses an empty argv", async () => {
    await expect(runner.run([])).rejects.toThrow(TypeError);
  });
});

describe("LocalRunner.stream", () => {
  const runner = new LocalRunner();

  function streamed(argv: string[]) {
    const lines: string[] = [];
    const errors: string[] = [];
    const exits: Array<{ exitCode: number | null; signal: string | null; error?: Error }> = [];
    let resolveExit!: () => void;
    const exited = new Promise<void>((resolve) => (resolveExit = resolve));
    const handle = runner.stream(argv, {
      onLine: (line) => lines.push(line),
      onStderrLine: (line) => errors.push(line),
      onExit: (info) => {
        exits.push(info);
        resolveExit();
      },
    });
    return { handle, lines, errors, exits, exited };
  }

  it("delivers lines split across chunks, and the last partial line at exit", async () => {
    const s = streamed(["/bin/sh", "-c", "printf 'first li'; sleep 0.2; printf 'ne\\nsecond\\nthi'; sleep 0.2; printf 'rd'"]);
    await s.exited;
    expect(s.lines).toEqual(["first line", "second", "third"]);
    expect(s.exits).toEqual([{ exitCode: 0, signal: null }]);
  });

  it("delivers stderr lines separately and reports the exit code", async () => {
    const s = streamed(["/bin/sh", "-c", "echo out; echo oops >&2; exit 4"]);
    await s.exited;
    expect(s.lines).toEqual(["out"]);
    expect(s.errors).toEqual(["oops"]);
    expect(s.exits).toEqual([{ exitCode: 4, signal: null }]);
  });

  it("stops the child with kill() and calls onExit exactly once", async () => {
    const s = streamed(["/bin/sh", "-c", "echo ready; exec sleep 30"]);
    await expect.poll(() => s.lines).toEqual(["ready"]);
    const pid = s.handle.pid;
    expect(pid).toBeTypeOf("number");
    s.handle.kill();
    s.handle.kill();
    await s.exited;
    await new Promise((r) => setTimeout(r, 100));
    expect(s.exits).toEqual([{ exitCode: null, signal: "SIGTERM" }]);
    expect(isAlive(pid!)).toBe(false);
  });

  it("SIGKILLs a child that ignores SIGTERM after 2 seconds", async () => {
    const s = streamed(["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]);
    await expect.poll(() => s.lines).toEqual(["ready"]);
    const started = Date.now();
    s.handle.kill();
    await s.exited;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
    expect(s.exits).toEqual([{ exitCode: null, signal: "SIGKILL" }]);
  });

  it("reports a missing program through onExit with a spawn error, without throwing", async () => {
    const s = streamed(["/nonexistent/program-y"]);
    await s.exited;
    expect(s.exits).toHaveLength(1);
    expect(s.exits[0]?.exitCode).toBeNull();
    expect(s.exits[0]?.error).toBeInstanceOf(ExecError);
    expect((s.exits[0]?.error as ExecError).failure).toBe("spawn");
    s.handle.kill();
  });

  it("survives a throwing line callback", async () => {
    let exits = 0;
    await new Promise<void>((resolve) => {
      runner.stream(["printf", "a\\nb\\n"], {
        onLine: () => {
          throw new Error("consumer bug");
        },
        onExit: () => {
          exits += 1;
          resolve();
        },
      });
    });
    expect(exits).toBe(1);
  });
});

describe("LocalRunner's child environment", () => {
  it("keeps the agent's environment but none of its CDH_AGENT_* settings (the SecretKey may be one)", async () => {
    process.env.CDH_AGENT_SECRET_KEY_TEST_ONLY = "must-not-reach-children";
    try {
      const runner = new LocalRunner({ defaultTimeoutMs: 10_000 });
      const { stdout } = await runner.run(["env"], { env: { EXTRA_ONE: "yes" } });
      expect(stdout).not.toContain("CDH_AGENT_");
      expect(stdout).toContain("EXTRA_ONE=yes");
      expect(stdout).toContain(`PATH=${process.env.PATH}`);
    } finally {
      delete process.env.CDH_AGENT_SECRET_KEY_TEST_ONLY;
    }
  });
});
