/**
 * Prometheus, alarms and the self-check (issue 13 parts 4–6) with two tiny guests and a 2 s
 * collection interval: /metrics is valid exposition (read by a parser) and carries the
 * instances' series, the host's capacity and the agent's health; a CPU alarm fires while a
 * guest burns CPU and resolves when it stops, and both events reach a controller stub in the
 * reports; a guest whose QEMU is stopped (SIGSTOP) shows as I/O hang or unknown in the
 * self-check; a guest that panics (sysrq `c` through its serial console) shows as a kernel
 * panic.
 */
import { execa } from "execa";
import { createRequire } from "node:module";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { commonClient, freePort, type AgentProcess } from "../support/agent-process.js";
import { ControllerStub } from "../support/controller-stub.js";
import { GuestConsole } from "../support/guest-console.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

interface Family {
  name: string;
  type: string;
  metrics: Array<{ value?: string; labels?: Record<string, string> }>;
}
const parseExposition = createRequire(import.meta.url)("parse-prometheus-text-format") as (text: string) => Family[];

interface AlarmEvent {
  Sequence: number;
  InstanceId: string;
  MetricName: string;
  State: "FIRING" | "RESOLVED";
  Value: number | null;
}
interface Report {
  Reason: string;
  Alarms?: AlarmEvent[];
}
interface Check {
  Code: string;
  Status: string;
  Reason: string;
}
interface DiagnosticReport {
  ReportId: string;
  InstanceId: string;
  Result: string;
  Checks: Check[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every alarm event the controller received, in the order of the reports. */
const alarmsOf = (controller: ControllerStub<Report>): AlarmEvent[] => controller.reports.flatMap((r) => r.Alarms ?? []);

async function qemuPid(domain: string): Promise<number> {
  const r = await execa("pgrep", ["-f", `guest=${domain},`], { reject: false });
  const pids = r.stdout.split("\n").filter(Boolean).map(Number);
  expect(pids, `one QEMU process for ${domain}`).toHaveLength(1);
  return pids[0]!;
}

/** Polls `probe` until it answers; on time-out the error says `what` (a function: what is seen then). */
async function until<T>(what: string | (() => Promise<string>), timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${typeof what === "string" ? what : await what()}: not within ${timeoutMs} ms`);
    await sleep(1_000);
  }
}

describe("Prometheus, alarms and the self-check", () => {
  const controller = new ControllerStub<Report>();
  let agent: AgentProcess;
  let ids: string[] = [];
  let metricsPort = 0;
  let consoleA: GuestConsole | undefined;

  const scrape = async (): Promise<Family[]> => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseExposition(await res.text());
  };
  /** What /metrics and the controller show now (a failure's context). */
  const cpuOf = async (id: string): Promise<string> => {
    const cpu = (await scrape()).find((f) => f.name === "cdh_instance_cpu_usage_percent")?.metrics.find((m) => m.labels?.instance_id === id)?.value;
    return `CPUUsage ${cpu ?? "absent"}, ${controller.reports.length} reports`;
  };
  const diagnose = async (id: string): Promise<DiagnosticReport> => {
    const r = (await commonClient(agent.port).request("CreateInstanceDiagnosticReports", { InstanceIds: [id] })) as { ReportIds: string[]; DiagnosticReportSet: DiagnosticReport[] };
    expect(r.ReportIds).toHaveLength(1);
    return r.DiagnosticReportSet[0]!;
  };
  const check = (report: DiagnosticReport, code: string): Check => {
    const c = report.Checks.find((x) => x.Code === code);
    if (!c) throw new Error(`no ${code} in ${JSON.stringify(report)}`);
    return c;
  };

  beforeAll(async () => {
    await controller.start();
    metricsPort = await freePort();
    ({ agent, ids } = await agentWithTinyGuests({
      repoRoot: inject("repoRoot"),
      imageName: "monitor-ops",
      count: 2,
      env: {
        CDH_AGENT_MONITOR_INTERVAL_S: "2",
        CDH_AGENT_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
        CDH_AGENT_CONTROLLER_URL: controller.url,
        CDH_AGENT_ALARM_RULES: "CPUUsage>30:2",
      },
    }));
    consoleA = await GuestConsole.open(ids[0]!);
  }, 150_000);

  afterAll(async () => {
    consoleA?.close();
    await agent?.shutdown();
    await controller.close();
  });

  it("serves valid exposition with each instance's series, the host's capacity and the agent's health", async () => {
    await agent.client.DescribeInstances({});
    const families = await until("a sample of both instances in /metrics", 20_000, async () => {
      const f = await scrape();
      const cpu = f.find((x) => x.name === "cdh_instance_cpu_usage_percent");
      return ids.every((id) => cpu?.metrics.some((m) => m.labels?.instance_id === id)) ? f : undefined;
    });
    const family = (name: string) => {
      const f = families.find((x) => x.name === name);
      if (!f) throw new Error(`no family ${name}`);
      return f;
    };
    for (const id of ids) {
      const cpu = Number(family("cdh_instance_cpu_usage_percent").metrics.find((m) => m.labels?.instance_id === id)!.value);
      expect(cpu).toBeGreaterThanOrEqual(0);
      expect(Number(family("cdh_instance_vcpu_seconds_total").metrics.find((m) => m.labels?.instance_id === id)!.value)).toBeGreaterThan(0);
    }
    expect(family("cdh_instance_vcpu_seconds_total").type).toBe("COUNTER");
    const figure = (name: string, label: string, v: string) => Number(family(name).metrics.find((m) => m.labels?.[label] === v)?.value);
    expect(figure("cdh_host_resource", "figure", "CpuTotal")).toBeGreaterThan(0);
    expect(figure("cdh_host_committed", "resource", "cpu")).toBe(2);
    expect(figure("cdh_host_committed", "resource", "memory_gib")).toBe(2);
    expect(figure("cdh_host_actual", "resource", "cpu")).toBeGreaterThanOrEqual(0);
    expect(family("cdh_api_requests_total").metrics.find((m) => m.labels?.action === "DescribeInstances" && m.labels?.code === "Success")).toBeDefined();
    expect(family("cdh_operations_total").metrics.find((m) => m.labels?.kind === "RunInstances" && m.labels?.outcome === "SUCCESS")).toBeDefined();
    expect(Number(family("cdh_reports_sent_total").metrics[0]!.value)).toBeGreaterThan(0);
    expect(family("cdh_journal_entries_open").metrics[0]!.value).toBe("0");
    expect(family("cdh_libvirt_event_lag_seconds").type).toBe("HISTOGRAM");
  });

  it("fires a CPU alarm while a guest burns and resolves it when it stops; both reach the controller", async () => {
    const [a] = ids as [string];
    const policies = (await commonClient(agent.port).request("DescribeAlarmPolicies", {})) as { AlarmPolicySet: unknown[] };
    expect(policies.AlarmPolicySet).toEqual([{ MetricName: "CPUUsage", Operator: "GT", Threshold: 30, ContinuePeriod: 2 }]);
    // Idle first (no alarm firing), and only the events from here on count.
    await until("no alarm firing before the burn", 30_000, async () =>
      ((await commonClient(agent.port).request("DescribeAlarmPolicies", {})) as { FiringAlarmSet: unknown[] }).FiringAlarmSet.length === 0 ? true : undefined,
    );
    const seen = alarmsOf(controller).length;
    const out = await consoleA!.run("while :; do :; done >/dev/null 2>&1 & echo CDH-BURN=$!");
    const pid = /CDH-BURN=(\d+)/.exec(out)?.[1];
    expect(pid, out).toBeDefined();
    const fired = await until(async () => `a FIRING CPUUsage alarm in a report (now ${await cpuOf(a)})`, 45_000, () => alarmsOf(controller).slice(seen).find((e) => e.InstanceId === a && e.MetricName === "CPUUsage" && e.State === "FIRING"));
    expect(fired.Value).toBeGreaterThan(30);
    await consoleA!.run(`kill ${pid}`);
    const resolved = await until(async () => `a RESOLVED CPUUsage alarm in a report (now ${await cpuOf(a)})`, 45_000, () => alarmsOf(controller).slice(seen).find((e) => e.InstanceId === a && e.State === "RESOLVED" && e.Sequence > fired.Sequence));
    expect(resolved.Sequence).toBeGreaterThan(fired.Sequence);
    expect(resolved.Value).toBeLessThanOrEqual(30);
    const counted = (await scrape()).find((f) => f.name === "cdh_alarm_events_total")!.metrics;
    expect(Number(counted.find((m) => m.labels?.state === "FIRING" && m.labels?.metric === "CPUUsage")?.value)).toBeGreaterThanOrEqual(1);
    expect(Number(counted.find((m) => m.labels?.state === "RESOLVED" && m.labels?.metric === "CPUUsage")?.value)).toBeGreaterThanOrEqual(1);
  });

  it("shows a guest whose QEMU is stopped (SIGSTOP) as an I/O hang or unknown", async () => {
    const b = ids[1]!;
    // OK first: it takes 30 s of samples to judge progress.
    await until(async () => `IO_HANG OK before the stop (${JSON.stringify(check(await diagnose(b), "IO_HANG"))})`, 45_000, async () =>
      check(await diagnose(b), "IO_HANG").Status === "OK" ? true : undefined,
    );
    const pid = await qemuPid(b);
    process.kill(pid, "SIGSTOP");
    try {
      await sleep(36_000);
      const report = await diagnose(b);
      const hang = check(report, "IO_HANG");
      expect(["FAULT", "UNKNOWN"], JSON.stringify(hang)).toContain(hang.Status);
      expect(hang.Reason.length).toBeGreaterThan(10);
      expect(["FAULT", "UNKNOWN", "WARNING"]).toContain(report.Result);
    } finally {
      process.kill(pid, "SIGCONT");
    }
  }, 100_000);

  it("shows a guest that panicked (sysrq c) as a kernel panic", async () => {
    const a = ids[0]!;
    expect(check(await diagnose(a), "KERNEL_PANIC").Status).toBe("OK");
    // The guest dies in the command: no end marker comes back.
    await expect(consoleA!.run("echo c > /proc/sysrq-trigger", 3_000)).rejects.toThrow(/no end/);
    const report = await until("KERNEL_PANIC FAULT in the self-check", 30_000, async () => {
      const r = await diagnose(a);
      return check(r, "KERNEL_PANIC").Status === "FAULT" ? r : undefined;
    });
    expect(check(report, "KERNEL_PANIC").Reason).toMatch(/crash|Kernel panic/);
    expect(report.Result).toBe("FAULT");
    const described = (await commonClient(agent.port).request("DescribeInstanceDiagnosticReports", { InstanceIds: [a] })) as { TotalCount: number; DiagnosticReportSet: DiagnosticReport[] };
    expect(described.DiagnosticReportSet[0]!.ReportId).toBe(report.ReportId);
  }, 60_000);
});
