import { describe, expect, it } from "vitest";
import { LocalRunner } from "../../../drivers/exec/local.js";
import { ExecError, type CommandRunner, type StreamOptions } from "../../../drivers/exec/runner.js";
import { parseDomStatsLines } from "../../../drivers/libvirt/domstats.js";
import { VirshSession } from "../../../drivers/libvirt/virsh-session.js";

/** libvirt's built-in test driver: a real virsh, no daemon. */
const URI = "test:///default";

/** A LocalRunner recording its streams' pids; with `argv`, its streams run that instead of virsh (a shell that hangs or exits). */
function pidRecording(argv?: string[]): CommandRunner & { pids: Array<number | undefined> } {
  const local = new LocalRunner({ defaultTimeoutMs: 10_000 });
  const pids: Array<number | undefined> = [];
  return {
    description: "local",
    pids,
    run: (a, o) => local.run(a, o),
    stream: (a: readonly string[], o: StreamOptions) => {
      const h = local.stream(argv ?? a, o);
      pids.push(h.pid);
      return h;
    },
    close: () => local.close(),
  };
}

async function failureOf(p: Promise<unknown>): Promise<ExecError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ExecError);
  return e as ExecError;
}

describe("VirshSession", () => {
  it("answers calls one after another from one virsh shell, without its prompt", async () => {
    const runner = pidRecording();
    const session = new VirshSession({ runner, uri: URI });
    try {
      for (let i = 0; i < 3; i++) {
        const lines = await session.run(["domstats", "--state"], 10_000);
        expect(lines.some((l) => l.startsWith("virsh "))).toBe(false);
        const [test] = parseDomStatsLines(lines);
        expect(test).toMatchObject({ name: "test", state: 1 });
      }
      expect(runner.pids).toHaveLength(1);
    } finally {
      session.close();
    }
  });

  it("fails a call whose command virsh reports an error for, and starts a new shell for the next", async () => {
    const runner = pidRecording();
    const session = new VirshSession({ runner, uri: URI });
    try {
      const e = await failureOf(session.run(["dominfo", "--domain", "no-such-domain"], 10_000));
      expect(e.failure).toBe("exit");
      expect(e.stderr).toMatch(/no-such-domain|not found/i);
      const lines = await session.run(["domstats", "--state"], 10_000);
      expect(parseDomStatsLines(lines)).toHaveLength(1);
      expect(runner.pids).toHaveLength(2);
    } finally {
      session.close();
    }
  });

  it("kills a shell that does not answer by the deadline; the next call starts another", async () => {
    const runner = pidRecording(["sleep", "30"]);
    const session = new VirshSession({ runner, uri: URI });
    try {
      const t = performance.now();
      const e = await failureOf(session.run(["domstats"], 300));
      expect(e.failure).toBe("timeout");
      expect(performance.now() - t).toBeLessThan(3_000);
      await failureOf(session.run(["domstats"], 300));
      expect(runner.pids).toHaveLength(2);
      expect(runner.pids[0]).not.toBe(runner.pids[1]);
    } finally {
      session.close();
    }
  });

  it("fails the call under way when the shell exits", async () => {
    const session = new VirshSession({ runner: pidRecording(["true"]), uri: URI });
    try {
      const e = await failureOf(session.run(["domstats"], 5_000));
      expect(["exit", "spawn"]).toContain(e.failure);
    } finally {
      session.close();
    }
  });

  it("refuses anything but plain words, and calls after close", async () => {
    const session = new VirshSession({ runner: pidRecording(), uri: URI });
    await expect(session.run(["domstats; destroy x"], 1_000)).rejects.toThrow(/plain word/);
    session.close();
    expect((await failureOf(session.run(["domstats"], 1_000))).failure).toBe("aborted");
  });
});
