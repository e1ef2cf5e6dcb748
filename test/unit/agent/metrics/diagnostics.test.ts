import { describe, expect, it } from "vitest";
import {
  checkConsole,
  checkFilesystems,
  checkIoHang,
  checkKernelPanic,
  checkNicErrors,
  checkReboots,
  checkShutdown,
  checkSustained,
  parseGuestFilesystems,
  scanConsole,
  worstOf,
  type ProgressPoint,
} from "../../../../agent/metrics/diagnostics.js";

const T = 1_800_000_000_000;
const pt = (s: number, vcpu: number | undefined, disk: number | undefined, nic: Partial<ProgressPoint> = {}): ProgressPoint => ({
  at: T + s * 1000,
  vcpuTimeNs: vcpu,
  diskReqs: disk,
  nicErrs: 0,
  nicDrops: 0,
  nicPkts: 0,
  ...nic,
});

describe("IO_HANG", () => {
  it("is a FAULT when a running guest's vCPUs and disks have not moved for 30 s", () => {
    const r = checkIoHang(true, [pt(0, 5e9, 100), pt(10, 5e9, 100), pt(20, 5e9, 100), pt(30, 5e9, 100)], T + 31_000, 10_000);
    expect(r.Status).toBe("FAULT");
    expect(r.Reason).toMatch(/no vCPU time and no disk request completed for 30 s/);
  });
  it("is OK when the vCPUs move (an idle guest with no disk I/O still ticks)", () => {
    expect(checkIoHang(true, [pt(0, 5e9, 100), pt(30, 5.1e9, 100)], T + 31_000, 10_000).Status).toBe("OK");
  });
  it("is UNKNOWN without block statistics (QEMU's monitor does not answer) or without a recent sample", () => {
    expect(checkIoHang(true, [pt(0, 5e9, undefined), pt(10, 5.2e9, undefined)], T + 11_000, 10_000)).toMatchObject({ Status: "UNKNOWN", Reason: /no block statistics/ });
    expect(checkIoHang(true, [pt(0, 5e9, 100)], T + 60_000, 10_000)).toMatchObject({ Status: "UNKNOWN", Reason: /no recent sample/ });
    expect(checkIoHang(true, [pt(0, 5e9, 100), pt(10, 5e9, 100)], T + 11_000, 10_000)).toMatchObject({ Status: "UNKNOWN", Reason: /fewer than 30 s/ });
  });
  it("is OK for an instance that is not running", () => {
    expect(checkIoHang(false, [], T, 10_000).Status).toBe("OK");
  });
});

const bootLog = (after: string) => `[    0.000000] Linux version 4.19.0 (old boot)\nKernel panic - not syncing: old\n[    0.000000] Linux version 6.1.0-28-amd64 (debian)\n${after}`;

describe("the serial console (this boot only)", () => {
  it("finds a panic, a hung task and a soft lockup after the last boot banner", () => {
    const f = scanConsole(
      bootLog(
        "[  123.4] INFO: task kworker/0:1:42 blocked for more than 120 seconds.\r\n" +
          "[  130.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]\n" +
          "[  140.0] Kernel panic - not syncing: sysrq triggered crash\n",
      ),
    );
    expect(f.panic).toBe("Kernel panic - not syncing: sysrq triggered crash");
    expect(f.hungTask).toMatch(/^INFO: task kworker\/0:1:42 blocked for more than 120 seconds\.$/);
    expect(f.softLockup).toMatch(/^watchdog: BUG: soft lockup - CPU#0 stuck for 22s!/);
    expect(checkConsole(f).map((c) => [c.Code, c.Status])).toEqual([
      ["HUNG_TASK", "WARNING"],
      ["SOFT_LOCKUP", "FAULT"],
    ]);
  });
  it("ignores what an earlier boot printed", () => {
    expect(scanConsole(bootLog("login: \n"))).toEqual({ panic: undefined, hungTask: undefined, softLockup: undefined });
  });
  it("is UNKNOWN, saying why, when the log cannot be read", () => {
    expect(checkConsole("the serial console log cannot be read (ENOENT)").map((c) => c.Status)).toEqual(["UNKNOWN", "UNKNOWN"]);
  });
});

describe("KERNEL_PANIC", () => {
  const crash = { domain: "ins-aaaaaaaa", kind: "lifecycle", event: "Crashed", detail: "Panicked", at: new Date(T) };
  it("is a FAULT on libvirt's crash event, the crashed state, or the console's panic line", () => {
    expect(checkKernelPanic([crash], false, undefined)).toMatchObject({ Status: "FAULT", Reason: /Crashed Panicked/ });
    expect(checkKernelPanic([], true, undefined).Status).toBe("FAULT");
    expect(checkKernelPanic([], false, "Kernel panic - not syncing: x")).toMatchObject({ Status: "FAULT", Reason: /serial console/ });
    expect(checkKernelPanic([], false, undefined).Status).toBe("OK");
  });
});

describe("RECENT_REBOOT, INSTANCE_SHUTDOWN", () => {
  it("warns about reboots of the last 12 hours only, and says since when the agent watched", () => {
    const now = T + 13 * 3600_000;
    expect(checkReboots([new Date(T)], now, T - 1).Status).toBe("OK");
    const r = checkReboots([new Date(T), new Date(now - 60_000)], now, now - 3600_000);
    expect(r).toMatchObject({ Status: "WARNING", Reason: /1 reboot\(s\).*watched since/ });
  });
  it("warns for STOPPED, is UNKNOWN without libvirt, OK when running", () => {
    expect(checkShutdown("STOPPED").Status).toBe("WARNING");
    expect(checkShutdown("UNKNOWN").Status).toBe("UNKNOWN");
    expect(checkShutdown("RUNNING").Status).toBe("OK");
  });
});

describe("HIGH_CPU, HIGH_MEMORY", () => {
  it("warns only when every point of the window is at or over the threshold", () => {
    expect(checkSustained("HIGH_CPU", [95, 99, 92, 90, Number.NaN], 90, true).Status).toBe("WARNING");
    expect(checkSustained("HIGH_CPU", [95, 99, 40, 97], 90, true).Status).toBe("OK");
    expect(checkSustained("HIGH_MEMORY", [Number.NaN, 99], 95, true)).toMatchObject({ Status: "UNKNOWN", Reason: /balloon/ });
  });
});

describe("NIC_ERRORS", () => {
  it("is OK without new errors, a WARNING for a few, a FAULT past 1 % of the packets", () => {
    expect(checkNicErrors([pt(0, 1, 1, { nicPkts: 100 }), pt(10, 1, 1, { nicPkts: 10_100 })], true).Status).toBe("OK");
    expect(checkNicErrors([pt(0, 1, 1), pt(10, 1, 1, { nicErrs: 2, nicPkts: 10_000 })], true).Status).toBe("WARNING");
    expect(checkNicErrors([pt(0, 1, 1), pt(10, 1, 1, { nicDrops: 500, nicPkts: 1000 })], true)).toMatchObject({ Status: "FAULT", Reason: /0 error\(s\) and 500 drop\(s\) over 1000 packet/ });
    expect(checkNicErrors([pt(0, 1, 1)], true).Status).toBe("UNKNOWN");
  });
});

describe("filesystems through the guest agent", () => {
  it("reads virsh guestinfo --filesystem and grades the fullest filesystem; read-only and inodes stay UNKNOWN, saying why", () => {
    const fs = parseGuestFilesystems(
      "fs.count               : 2\nfs.0.name              : vda1\nfs.0.mountpoint        : /\nfs.0.total-bytes       : 1000\nfs.0.used-bytes        : 990\n" +
        "fs.1.mountpoint        : /boot\nfs.1.total-bytes       : 1000\nfs.1.used-bytes        : 10\n",
    );
    expect(fs).toEqual([
      { mountpoint: "/", totalBytes: 1000, usedBytes: 990 },
      { mountpoint: "/boot", totalBytes: 1000, usedBytes: 10 },
    ]);
    const checks = checkFilesystems(fs);
    expect(checks.map((c) => [c.Code, c.Status])).toEqual([
      ["FS_READONLY", "UNKNOWN"],
      ["FS_FULL", "FAULT"],
      ["FS_INODES_EXHAUSTED", "UNKNOWN"],
    ]);
    expect(checks[1]!.Reason).toBe("/ is 99.0 % full");
    expect(checks[0]!.Reason).toMatch(/no mount options/);
  });
  it("is UNKNOWN everywhere, with the reason, when the guest agent does not answer", () => {
    expect(checkFilesystems("the guest agent did not answer (error: Guest agent is not responding)").every((c) => c.Status === "UNKNOWN" && /did not answer/.test(c.Reason))).toBe(true);
  });
});

describe("a report's result", () => {
  it("is its worst check: FAULT over WARNING over UNKNOWN over OK", () => {
    expect(worstOf([{ Code: "IO_HANG", Status: "OK", Reason: "" }, { Code: "FS_FULL", Status: "UNKNOWN", Reason: "" }])).toBe("UNKNOWN");
    expect(worstOf([{ Code: "IO_HANG", Status: "FAULT", Reason: "" }, { Code: "FS_FULL", Status: "WARNING", Reason: "" }])).toBe("FAULT");
  });
});

describe("DiagnosticsService", () => {
  it("runs every check from the samples, the events and the console log; the guest agent's silence is UNKNOWN with its reason", async () => {
    const { mkdtempSync, writeFileSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { DiagnosticsService, CHECK_CODES } = await import("../../../../agent/metrics/diagnostics.js");
    const { RecordingRunner } = await import("../../../support/recording-runner.js");
    const dir = mkdtempSync(join(tmpdir(), "diag-"));
    writeFileSync(join(dir, "console.log"), "READY\n[   42.0] Kernel panic - not syncing: sysrq triggered crash\n");
    const runner = new RecordingRunner().on((argv) => argv.includes("guestinfo"), { exitCode: 1, stderr: "error: Guest agent is not responding: QEMU guest agent is not connected\n" });
    let listener: ((s: never) => void) | undefined;
    const now = T + 100_000;
    const service = new DiagnosticsService({
      monitor: {
        latest: () => undefined,
        status: () => ({ samples: 0, missed: 0, overruns: 0, lastDurationMs: undefined, lastError: undefined }),
        query: () => ({ timestamps: [], avg: [], max: [], min: [] }),
        subscribe: (fn) => {
          listener = fn as never;
          return () => undefined;
        },
      },
      intervalMs: 10_000,
      stateOf: (id) => (id === "ins-aaaaaaaa" ? "RUNNING" : undefined),
      consoleLogPath: () => join(dir, "console.log"),
      runner,
      uri: "qemu:///system",
      now: () => now,
    });
    expect(listener).toBeDefined();
    service.onEvent({ domain: "ins-aaaaaaaa", kind: "reboot", event: "reboot", detail: "", at: new Date(now - 5_000) });
    const [report] = await service.create(["ins-aaaaaaaa"]);
    expect(report!.Checks.map((c) => c.Code)).toEqual([...CHECK_CODES]);
    const byCode = Object.fromEntries(report!.Checks.map((c) => [c.Code, c]));
    expect(byCode.KERNEL_PANIC).toMatchObject({ Status: "FAULT", Reason: /sysrq triggered crash/ });
    expect(byCode.FS_FULL).toMatchObject({ Status: "UNKNOWN", Reason: /guest agent did not answer \(error: Guest agent is not responding/ });
    expect(byCode.RECENT_REBOOT!.Status).toBe("WARNING");
    expect(byCode.IO_HANG!.Status).toBe("UNKNOWN");
    expect(report!.Result).toBe("FAULT");
    expect(service.describe({ instanceIds: ["ins-aaaaaaaa"] }).map((r) => r.ReportId)).toEqual([report!.ReportId]);
    await expect(service.create(["ins-bbbbbbbb"])).rejects.toMatchObject({ kind: "InstanceNotFound" });
  });
});

describe("DiagnosticsService's sample history", () => {
  it("holds enough samples at a short interval (2 s) to judge 30 s of progress, and sees a stop", async () => {
    const { DiagnosticsService } = await import("../../../../agent/metrics/diagnostics.js");
    const { RecordingRunner } = await import("../../../support/recording-runner.js");
    const { METRIC_COUNT } = await import("../../../../agent/monitor/metrics.js");
    let now = T;
    const service = new DiagnosticsService({
      monitor: {
        latest: () => undefined,
        status: () => ({ samples: 0, missed: 0, overruns: 0, lastDurationMs: undefined, lastError: undefined }),
        query: () => ({ timestamps: [], avg: [], max: [], min: [] }),
        subscribe: () => () => undefined,
      },
      intervalMs: 2_000,
      stateOf: () => "RUNNING",
      consoleLogPath: () => "/nonexistent/console.log",
      runner: new RecordingRunner().on((argv) => argv.includes("guestinfo"), { exitCode: 1, stderr: "error: no agent\n" }),
      uri: "qemu:///system",
      now: () => now,
    });
    const feed = (vcpuNs: number) => {
      now += 2_000;
      const counters = { name: "ins-aaaaaaaa", vcpuTimeNs: vcpuNs, nics: [], blocks: [{ name: "vda", rdReqs: 5, rdBytes: 0, rdTimesNs: 0, wrReqs: 5, wrBytes: 0, wrTimesNs: 0, flReqs: 0, flTimesNs: 0 }] };
      service.onSample({ at: now, durationMs: 1, instances: new Map([["ins-aaaaaaaa", { instanceId: "ins-aaaaaaaa", at: now, state: 1, values: new Float64Array(METRIC_COUNT), counters }]]) });
    };
    for (let i = 0; i < 40; i++) feed(1e9 + i * 1e7);
    const hang = async () => (await service.create(["ins-aaaaaaaa"]))[0]!.Checks.find((c) => c.Code === "IO_HANG")!;
    expect(await hang()).toMatchObject({ Status: "OK" });
    for (let i = 0; i < 20; i++) feed(2e9);
    expect(await hang()).toMatchObject({ Status: "FAULT", Reason: /for 3\d s/ });
  });
});
