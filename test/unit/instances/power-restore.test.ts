import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { LibvirtError } from "../../../drivers/libvirt/types.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { Operations } from "../../../agent/core/operations.js";
import { intendedPower, PowerRestore } from "../../../agent/instances/power-restore.js";
import type { InstanceRecord } from "../../../agent/model.js";
import { ctx, makeHarness, runRequest, stateOf, until, type Harness } from "./harness.js";

let h: Harness;

afterEach(async () => {
  await h?.close();
});

const savedIntent = (id: string) => (JSON.parse(h.hv.peek(id)!.spec.metadata!) as InstanceRecord).powerIntent;

/** Four instances: a and d left running, b stopped by its owner, c powered off from inside the guest. */
async function fourInstances(): Promise<{ a: string; b: string; c: string; d: string }> {
  h = await makeHarness();
  const ids = await h.instances.launch.run(runRequest(4), ctx());
  for (const id of ids) await until(h, id, "RUNNING");
  const [a, b, c, d] = ids as [string, string, string, string];
  h.instances.powerOps.stop([b], "SOFT", ctx("req-stop"));
  await until(h, b, "STOPPED");
  await h.hv.shutdown(c); // the guest's own poweroff: no operation of the agent
  await until(h, c, "STOPPED");
  await h.instances.ops.idle();
  // The intent is saved in the domain's record (libvirt), not only in memory.
  await expect.poll(() => savedIntent(c), { timeout: 5000 }).toBe("off");
  expect(savedIntent(b)).toBe("off");
  return { a, b, c, d };
}

describe("power across a host restart", () => {
  it("after a power loss, starts exactly the instances that were running, and says which and why", async () => {
    const { a, b, c, d } = await fourInstances();
    h = await h.restart(() => h.hv.powerLoss());
    expect([a, b, c, d].map((id) => stateOf(h, id))).toEqual(["STOPPED", "STOPPED", "STOPPED", "STOPPED"]);
    const done = h.instances.powerRestore.begin();
    // Decided at once: the ones to start show STARTING before any start has run.
    expect(stateOf(h, a)).toBe("STARTING");
    expect(stateOf(h, b)).toBe("STOPPED");
    const result = await done;
    expect([a, b, c, d].map((id) => h.hv.peek(id)!.state)).toEqual(["running", "shut off", "shut off", "running"]);
    // In the registry's order (libvirt's listing), not the launch's.
    expect(result.restarted.map((r) => [r.instanceId, r.result]).sort()).toEqual(
      [
        [a, "SUCCESS"],
        [d, "SUCCESS"],
      ].sort(),
    );
    expect(result.restarted[0]!.reason).toMatch(/RUNNING before/);
    expect(result.keptStopped.sort()).toEqual([b, c].sort());
    expect(h.registry.get(a)!.record.latestOperation).toMatchObject({ action: "StartInstances", state: "SUCCESS" });
  });

  it("after a restart of the agent alone (domains still running), starts nothing", async () => {
    const { b } = await fourInstances();
    const startsBefore = h.hv.count("start");
    h = await h.restart();
    const result = await h.instances.powerRestore.begin();
    expect(result.restarted).toEqual([]);
    expect(result.stillRunning).toBe(2);
    expect(result.keptStopped).toHaveLength(2);
    expect(h.hv.count("start")).toBe(startsBefore);
    expect(stateOf(h, b)).toBe("STOPPED");
  });

  it("a StopInstances cut short after saving its intent leaves the domain running and the instance stopped after a power loss", async () => {
    h = await makeHarness();
    const [id] = await h.instances.launch.run(runRequest(1), ctx());
    await until(h, id!, "RUNNING");
    h.hv.failNext("destroy", new LibvirtError("the agent was killed here"), id);
    h.instances.powerOps.stop([id!], "HARD", ctx("req-stop"));
    await h.instances.ops.idle();
    expect(h.hv.peek(id!)!.state).toBe("running");
    expect(savedIntent(id!)).toBe("off");
    h = await h.restart(() => h.hv.powerLoss());
    const result = await h.instances.powerRestore.begin();
    expect(result.restarted).toEqual([]);
    expect(stateOf(h, id!)).toBe("STOPPED");
    // The owner starts it again: the intent is on before the domain starts.
    h.instances.powerOps.start([id!], ctx("req-start"));
    await until(h, id!, "RUNNING");
    await h.instances.ops.idle();
    expect(savedIntent(id!)).toBe("on");
  });

  it("leaves an instance whose interrupted operation recovery settled as recovery left it", async () => {
    const { a, d } = await fourInstances();
    h = await h.restart(() => h.hv.powerLoss());
    // As if start-up recovery had rolled back a reinstall of a (it stays stopped on its old disk).
    const result = await h.instances.powerRestore.begin(new Set([a]));
    expect(result.restarted.map((r) => r.instanceId)).toEqual([d]);
    expect(stateOf(h, a)).toBe("STOPPED");
    expect(h.hv.peek(a)!.state).toBe("shut off");
    expect(h.hv.peek(d)!.state).toBe("running");
  });

  it("restore_power_on_start off: everything found off stays off", async () => {
    const { a, d } = await fourInstances();
    h = await h.restart(() => h.hv.powerLoss());
    const restore = new PowerRestore({ ops: h.instances.ops, registry: h.registry, power: h.instances.power, enabled: false, concurrency: 4, logger: pino({ level: "silent" }) });
    const result = await restore.begin();
    expect(result.enabled).toBe(false);
    expect(result.restarted).toEqual([]);
    expect(result.keptStopped).toHaveLength(4);
    expect([stateOf(h, a), stateOf(h, d)]).toEqual(["STOPPED", "STOPPED"]);
  });

  it("spreads the starts: never more than restore_power_concurrency at once", async () => {
    h = await makeHarness({ cpus: 16, memoryGiB: 32 });
    const ids = await h.instances.launch.run(runRequest(7), ctx());
    for (const id of ids) await until(h, id, "RUNNING");
    h = await h.restart(() => h.hv.powerLoss());
    let inFlight = 0;
    let most = 0;
    const power = {
      startNow: async (id: string) => {
        inFlight += 1;
        most = Math.max(most, inFlight);
        await new Promise((r) => setTimeout(r, 20));
        await h.instances.power.startNow(id);
        inFlight -= 1;
      },
    };
    const restore = new PowerRestore({ ops: h.instances.ops, registry: h.registry, power, enabled: true, concurrency: 2, logger: pino({ level: "silent" }) });
    const result = await restore.begin();
    expect(result.restarted.every((r) => r.result === "SUCCESS")).toBe(true);
    expect(result.restarted).toHaveLength(7);
    expect(most).toBe(2);
  });

  it("holds a turn while libvirt starts the domain, not while the outcome is saved", async () => {
    h = await makeHarness({ cpus: 16, memoryGiB: 32 });
    const ids = await h.instances.launch.run(runRequest(3), ctx());
    for (const id of ids) await until(h, id, "RUNNING");
    h = await h.restart(() => h.hv.powerLoss());
    const events: string[] = [];
    // Saves that take long (a virsh of their own on a busy host).
    const ops = new Operations({
      registry: h.registry,
      records: {
        setMetadata: async (id, json) => {
          events.push(`save ${id}`);
          await new Promise((r) => setTimeout(r, 100));
          await h.hv.setMetadata(id, json);
          events.push(`saved ${id}`);
        },
      },
      codeOf: cvmCodeOf,
      logger: pino({ level: "silent" }),
    });
    const power = {
      startNow: async (id: string) => {
        events.push(`start ${id}`);
        await h.instances.power.startNow(id);
      },
    };
    const restore = new PowerRestore({ ops, registry: h.registry, power, enabled: true, concurrency: 1, logger: pino({ level: "silent" }) });
    const result = await restore.begin();
    expect(result.restarted.map((r) => r.result)).toEqual(["SUCCESS", "SUCCESS", "SUCCESS"]);
    // Every save is done when begin() settles, and the second start did not wait for the first save.
    const [first, second] = result.restarted.map((r) => r.instanceId) as [string, string];
    expect(events.filter((e) => e.startsWith("saved"))).toHaveLength(3);
    expect(events.indexOf(`start ${second}`)).toBeLessThan(events.indexOf(`saved ${first}`));
    expect(JSON.parse(h.hv.peek(first)!.spec.metadata!).latestOperation).toMatchObject({ action: "StartInstances", state: "SUCCESS" });
  });

  it("records without an intent: off only after a successful StopInstances", () => {
    const base = { latestOperation: undefined } as unknown as InstanceRecord;
    expect(intendedPower(base)).toBe("on");
    expect(intendedPower({ ...base, latestOperation: { action: "StopInstances", state: "SUCCESS", requestId: "r" } })).toBe("off");
    expect(intendedPower({ ...base, latestOperation: { action: "StopInstances", state: "FAILED", requestId: "r" } })).toBe("on");
    expect(intendedPower({ ...base, powerIntent: "off", latestOperation: { action: "StartInstances", state: "SUCCESS", requestId: "r" } })).toBe("off");
  });
});
