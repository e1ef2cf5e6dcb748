/** ResetInstancesType wired as main.ts wires it, over the stateful fake hypervisor: admission, reservation, modes, refusals. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { DomainError } from "../../../agent/core/errors.js";
import { ctx, makeHarness, runRequest, until, type Harness } from "./harness.js";

let h: Harness;

afterEach(async () => {
  await h?.close();
});

async function codeOf(work: () => unknown): Promise<string> {
  try {
    await work();
  } catch (error) {
    if (error instanceof DomainError) return cvmCodeOf(error);
    throw error;
  }
  throw new Error("the request was accepted");
}

const retype = (id: string, cpu: number, memoryGiB: number, forceStop = false) =>
  h.instances.retype.retype({ instanceId: id, instanceType: `CDH_${cpu}C${memoryGiB}G`, cpu, memoryGiB, forceStop }, ctx(`req-${cpu}-${memoryGiB}`));

async function settled(id: string): Promise<string> {
  await h.instances.ops.idle();
  const op = h.registry.get(id)!.record.latestOperation!;
  expect(op.action).toBe("ResetInstancesType");
  return op.state;
}

describe("ResetInstancesType over the fake hypervisor", () => {
  let id: string;
  beforeEach(async () => {
    h = await makeHarness({ cpus: 4, memoryGiB: 8 });
    [id] = (await h.instances.launch.run(runRequest(1, 1, 1), ctx())) as [string];
    await until(h, id, "RUNNING");
  });

  it("stopped: one definition with the new size; the growth is reserved until it lands; a second resize meanwhile is refused", async () => {
    h.instances.powerOps.stop([id], "HARD", ctx());
    await until(h, id, "STOPPED");
    await h.instances.ops.idle();
    await retype(id, 3, 4);
    expect([...h.instances.retype.reservations()]).toEqual([{ cpu: 2, memoryGiB: 3 }]);
    expect(await codeOf(() => retype(id, 2, 2))).toBe("InvalidInstanceState");
    expect(await settled(id)).toBe("SUCCESS");
    expect([...h.instances.retype.reservations()]).toEqual([]);
    const spec = h.hv.peek(id)!.spec;
    expect({ vcpus: spec.vcpus, memoryMiB: spec.memoryMiB, state: h.hv.peek(id)!.state }).toEqual({ vcpus: 3, memoryMiB: 4096, state: "shut off" });
    expect(JSON.parse(spec.metadata)).toMatchObject({ cpu: 3, memoryGiB: 4, instanceType: "CDH_3C4G" });
    expect(h.registry.get(id)!.record).toMatchObject({ cpu: 3, memoryGiB: 4, instanceType: "CDH_3C4G" });
    expect(await h.journal.readAll()).toMatchObject({ entries: [] });
  });

  it("refuses what does not fit (only the growth counts) and changes nothing", async () => {
    h.instances.powerOps.stop([id], "HARD", ctx());
    await until(h, id, "STOPPED");
    await h.instances.ops.idle();
    // 4 vCPUs and 8 GiB on the host; the instance holds 1 and 1: it may grow to 4C8G, not beyond.
    expect(await codeOf(() => retype(id, 5, 1))).toBe("ResourceInsufficient.SpecifiedInstanceType");
    expect(await codeOf(() => retype(id, 1, 9))).toBe("ResourceInsufficient.SpecifiedInstanceType");
    expect(await codeOf(() => retype(id, 1, 1))).toBe("InvalidParameterValue");
    expect(h.hv.peek(id)!.spec.vcpus).toBe(1);
    expect([...h.instances.retype.reservations()]).toEqual([]);
    await retype(id, 4, 8);
    expect(await settled(id)).toBe("SUCCESS");
  });

  it("running: refused without ForceStop when it cannot apply live; with ForceStop stopped, resized, started", async () => {
    // No headroom in this definition.
    h.hv.script("liveSize", async () => ({ vcpus: 1, memoryMiB: 1024, maxVcpus: 1, maxMemoryMiB: 1024, freeSlots: 0 }));
    const refused = retype(id, 2, 2);
    await expect(refused).rejects.toThrow(/cannot apply live: 2 vCPUs is beyond/);
    expect(await codeOf(() => retype(id, 2, 2))).toBe("UnsupportedOperation.InstanceStateRunning");
    await retype(id, 2, 2, true);
    expect(await settled(id)).toBe("SUCCESS");
    expect(h.hv.peek(id)).toMatchObject({ state: "running", spec: { vcpus: 2, memoryMiB: 2048 } });
  });

  it("running within headroom: live vCPUs and a DIMM of the difference, then the definition", async () => {
    const calls: string[] = [];
    h.hv.script("liveSize", async () => ({ vcpus: 1, memoryMiB: 1024, maxVcpus: 4, maxMemoryMiB: 4096, freeSlots: 8 }));
    h.hv.script("setVcpusLive", async (_n, count) => void calls.push(`vcpus ${String(count)}`));
    h.hv.script("attachMemoryLive", async (_n, mib) => void calls.push(`dimm ${String(mib)}`));
    await retype(id, 2, 3);
    expect(await settled(id)).toBe("SUCCESS");
    expect(calls).toEqual(["vcpus 2", "dimm 2048"]);
    expect(h.hv.peek(id)).toMatchObject({ state: "running", spec: { vcpus: 2, memoryMiB: 3072 } });
    // A shrink never applies live.
    h.hv.script("liveSize", async () => ({ vcpus: 2, memoryMiB: 3072, maxVcpus: 4, maxMemoryMiB: 4096, freeSlots: 7 }));
    await expect(retype(id, 1, 3)).rejects.toThrow(/never removed/);
  });
});

describe("DescribeInstancesModification", () => {
  it("SELL exactly when admission would take it", async () => {
    h = await makeHarness({ cpus: 4, memoryGiB: 8 });
    const [a, b] = (await h.instances.launch.run(runRequest(2, 1, 2), ctx())) as [string, string];
    await until(h, a, "RUNNING");
    await until(h, b, "RUNNING");
    h.hv.script("liveSize", async () => ({ vcpus: 1, memoryMiB: 2048, maxVcpus: 1, maxMemoryMiB: 2048, freeSlots: 0 }));
    // Left: 2 vCPUs, 4 GiB. a holds 1C2G: it can grow by 2 and 4. No headroom: every change needs ForceStop.
    const m = await h.instances.retype.modification([a]);
    const status = Object.fromEntries(m.map((x) => [`CDH_${x.size.cpu}C${x.size.memoryGiB}G`, x.status]));
    expect(status).toMatchObject({ CDH_1C1G: "SELL", CDH_2C4G: "SELL", CDH_2C8G: "UNAVAILABLE", CDH_4C4G: "UNAVAILABLE" });
    expect(status).not.toHaveProperty("CDH_1C2G");
    expect(m.find((x) => x.size.cpu === 2 && x.size.memoryGiB === 4)!.message).toMatch(/is running and needs ForceStop: 2 vCPUs is beyond/);
    expect(m.find((x) => x.size.cpu === 2 && x.size.memoryGiB === 8)!.message).toMatch(/memory requested, 4 GiB available/);
    for (const x of m) {
      const fits = await h.instances.retype
        .retype({ instanceId: a, instanceType: "x", cpu: x.size.cpu, memoryGiB: x.size.memoryGiB, forceStop: true }, ctx())
        .then(
          () => true,
          (e: unknown) => (e instanceof DomainError && e.kind === "NoRoom" ? false : Promise.reject(e)),
        );
      expect([x.size, fits]).toEqual([x.size, x.status === "SELL"]);
      if (fits) {
        expect(await settled(a)).toBe("SUCCESS");
        // Back to 1C2G for the next size.
        await h.instances.retype.retype({ instanceId: a, instanceType: "CDH_1C2G", cpu: 1, memoryGiB: 2, forceStop: true }, ctx());
        expect(await settled(a)).toBe("SUCCESS");
      }
    }
    // Both instances named: a size is SELL only when it fits each.
    expect((await h.instances.retype.modification([a, b])).find((x) => x.size.cpu === 2 && x.size.memoryGiB === 4)?.status).toBe("SELL");
  });
});
