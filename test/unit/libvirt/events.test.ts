import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parseEventLine, superviseEvents } from "../../../drivers/libvirt/events.js";
import type { DomainEvent } from "../../../drivers/libvirt/types.js";
import { RecordingRunner } from "../../support/recording-runner.js";

/** Lines captured from `virsh event --all --loop --timestamp`, libvirt 9.0.0, QEMU 7.2 (TCG). */
const CAPTURED = `2026-11-23 12:22:33.737+0000: event 'lifecycle' for domain 'drvtest-cap': Defined Added
2026-11-23 12:22:33.894+0000: event 'agent-lifecycle' for domain 'drvtest-cap': state: 'disconnected' reason: 'domain started'
2026-11-23 12:22:34.264+0000: event 'lifecycle' for domain 'drvtest-cap': Resumed Unpaused
2026-11-23 12:22:34.265+0000: event 'lifecycle' for domain 'drvtest-cap': Started Booted
2026-11-23 12:22:35.303+0000: event 'lifecycle' for domain 'drvtest-cap': Suspended Paused
2026-11-23 12:22:35.328+0000: event 'lifecycle' for domain 'drvtest-cap': Resumed Unpaused
2026-11-23 12:22:35.370+0000: event 'reboot' for domain 'drvtest-cap'
2026-11-23 12:22:35.481+0000: event 'device-removed' for domain 'drvtest-cap': virtio-disk1
2026-11-23 12:22:43.130+0000: event 'lifecycle' for domain 'drvtest-cap': Shutdown Finished after guest request
2026-11-23 12:22:45.149+0000: event 'lifecycle' for domain 'drvtest-cap': Stopped Shutdown
2026-11-23 12:22:51.250+0000: event 'lifecycle' for domain 'drvtest-cap': Shutdown Finished after host request
2026-11-23 12:22:51.258+0000: event 'lifecycle' for domain 'drvtest-cap': Stopped Destroyed
2026-11-23 12:22:51.284+0000: event 'lifecycle' for domain 'drvtest-cap': Undefined Removed
2026-11-23 12:22:57.798+0000: event 'metadata-change' for domain 'drvtest-cap': type element, uri https://cdh-agent.dev/xmlns/instance/1`;

describe("parseEventLine", () => {
  const parsed = CAPTURED.split("\n").map((l) => parseEventLine(l));
  const brief = (e: DomainEvent | null) => e && [e.kind, e.event, e.detail];

  it("reads every captured libvirt 9.0 line", () => {
    expect(parsed.map(brief)).toEqual([
      ["lifecycle", "Defined", "Added"],
      ["agent-lifecycle", "disconnected", "domain started"],
      ["lifecycle", "Resumed", "Unpaused"],
      ["lifecycle", "Started", "Booted"],
      ["lifecycle", "Suspended", "Paused"],
      ["lifecycle", "Resumed", "Unpaused"],
      ["reboot", "reboot", ""],
      ["device-removed", "device-removed", "virtio-disk1"],
      ["lifecycle", "Shutdown", "Finished after guest request"],
      ["lifecycle", "Stopped", "Shutdown"],
      ["lifecycle", "Shutdown", "Finished after host request"],
      ["lifecycle", "Stopped", "Destroyed"],
      ["lifecycle", "Undefined", "Removed"],
      ["metadata-change", "metadata-change", "type element, uri https://cdh-agent.dev/xmlns/instance/1"],
    ]);
    expect(parsed.every((e) => e?.domain === "drvtest-cap")).toBe(true);
  });

  it("takes the time from the timestamp, with its offset", () => {
    expect(parsed[0]?.at.toISOString()).toBe("2026-11-23T12:22:33.737Z");
    const shifted = parseEventLine("2026-11-23 14:00:00.5+0200: event 'reboot' for domain 'a'");
    expect(shifted?.at.toISOString()).toBe("2026-11-23T12:00:00.500Z");
  });

  it("uses the clock for a line without a timestamp", () => {
    const now = new Date("2030-01-01T00:00:00Z");
    expect(parseEventLine("event 'lifecycle' for domain 'b': Started Booted", () => now)).toEqual({
      domain: "b",
      kind: "lifecycle",
      event: "Started",
      detail: "Booted",
      at: now,
    });
  });

  it("returns null for lines that are not events", () => {
    expect(parseEventLine("")).toBeNull();
    expect(parseEventLine("events received: 3")).toBeNull();
    expect(parseEventLine("error: Disconnected from qemu:///system due to end of file")).toBeNull();
  });
});

describe("superviseEvents", () => {
  const argv = ["virsh", "-c", "qemu:///system", "event", "--all", "--loop", "--timestamp"];
  let runner: RecordingRunner;
  let log: string[];
  let events: DomainEvent[];
  let pingResult: boolean;

  const start = () =>
    superviseEvents({
      runner,
      argv,
      ping: async () => pingResult,
      handlers: {
        onEvent: (e) => events.push(e),
        onConnected: () => log.push("connected"),
        onDisconnected: (reason) => log.push(`disconnected: ${reason}`),
      },
    });

  beforeEach(() => {
    vi.useFakeTimers();
    runner = new RecordingRunner().allowStreams();
    log = [];
    events = [];
    pingResult = true;
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("runs one event child, confirms with a ping, then delivers parsed events", async () => {
    const watch = start();
    expect(runner.streams.map((s) => s.argv)).toEqual([argv]);
    await vi.advanceTimersByTimeAsync(0);
    expect(log).toEqual(["connected"]);
    runner.streams[0]!.emitLine("2026-11-23 12:22:34.265+0000: event 'lifecycle' for domain 'ins-a': Started Booted");
    runner.streams[0]!.emitLine("garbage");
    expect(events.map((e) => [e.domain, e.event])).toEqual([["ins-a", "Started"]]);
    watch.stop();
  });

  it("restarts a dead child after 0.5 s, doubling up to 10 s", async () => {
    const watch = start();
    await vi.advanceTimersByTimeAsync(0);
    const expectedDelays = [500, 1000, 2000, 4000, 8000, 10_000, 10_000];
    for (const [i, delay] of expectedDelays.entries()) {
      runner.streams[i]!.exit({ exitCode: 1 });
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(runner.streams).toHaveLength(i + 1);
      await vi.advanceTimersByTimeAsync(1);
      expect(runner.streams).toHaveLength(i + 2);
    }
    expect(log.filter((l) => l === "connected")).toHaveLength(expectedDelays.length + 1);
    expect(log[1]).toMatch(/^disconnected: virsh event exited with code 1/);
    watch.stop();
  });

  it("resets the delay to 0.5 s after a child that ran 30 s", async () => {
    const watch = start();
    for (let i = 0; i < 3; i++) {
      runner.streams[i]!.exit({ exitCode: 1 });
      await vi.advanceTimersByTimeAsync(10_000);
    }
    expect(runner.streams).toHaveLength(4); // delays 500, 1000, 2000 used; next is 4000
    await vi.advanceTimersByTimeAsync(30_000);
    runner.streams[3]!.exit({ exitCode: 1 });
    await vi.advanceTimersByTimeAsync(500);
    expect(runner.streams).toHaveLength(5);
    watch.stop();
  });

  it("kills a child whose ping fails, and the restart follows", async () => {
    pingResult = false;
    const watch = start();
    await vi.advanceTimersByTimeAsync(0);
    expect(runner.streams[0]!.killed).toBe(true);
    expect(log).toEqual(["disconnected: virsh event killed by SIGTERM"]);
    pingResult = true;
    await vi.advanceTimersByTimeAsync(500);
    expect(runner.streams).toHaveLength(2);
    expect(log.at(-1)).toBe("connected");
    watch.stop();
  });

  it("carries the last stderr line into the disconnect reason", async () => {
    const watch = start();
    await vi.advanceTimersByTimeAsync(0);
    runner.streams[0]!.emitStderr("error: Disconnected from qemu:///system due to end of file");
    runner.streams[0]!.exit({ exitCode: 1 });
    expect(log.at(-1)).toBe(
      "disconnected: virsh event exited with code 1: error: Disconnected from qemu:///system due to end of file",
    );
    watch.stop();
  });

  it("stop() kills the child, cancels a pending restart, and nothing follows", async () => {
    const watch = start();
    await vi.advanceTimersByTimeAsync(0);
    runner.streams[0]!.exit({ exitCode: 1 });
    watch.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(runner.streams).toHaveLength(1);

    const second = start();
    const child = runner.streams[1]!;
    second.stop();
    expect(child.killed).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(runner.streams).toHaveLength(2);
    expect(log.filter((l) => l.startsWith("disconnected"))).toHaveLength(1);
  });

  it("survives a handler that throws", async () => {
    const watch = superviseEvents({
      runner,
      argv,
      ping: async () => true,
      handlers: {
        onEvent: () => {
          throw new Error("boom");
        },
        onConnected: () => {},
        onDisconnected: () => {},
      },
    });
    expect(() => runner.streams[0]!.emitLine("event 'reboot' for domain 'a'")).not.toThrow();
    watch.stop();
  });
});
