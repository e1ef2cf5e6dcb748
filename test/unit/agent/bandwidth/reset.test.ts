import { describe, expect, it } from "vitest";
import { DomainError } from "../../../../agent/core/errors.js";
import { resetInternetMaxBandwidth } from "../../../../agent/network/bandwidth/reset.js";
import type { BandwidthCaps } from "../../../../agent/network/bandwidth/service.js";
import type { InstanceEntry, InstanceRegistry } from "../../../../agent/instances/registry.js";
import type { InstanceRecord } from "../../../../agent/model.js";

function entry(instanceId: string, internetRoute: boolean, internetMaxBandwidthOut?: number): InstanceEntry {
  const record = { instanceId, cpu: 1, nics: [{ mac: "52:54:00:00:00:01", network: "n", subnetId: internetRoute ? "subnet-out" : "subnet-in" }], ...(internetMaxBandwidthOut ? { internetMaxBandwidthOut } : {}) };
  return { record: record as unknown as InstanceRecord } as InstanceEntry;
}

function harness(entries: InstanceEntry[]) {
  const saved: string[] = [];
  const touched: string[] = [];
  let synced = 0;
  const ops = {
    validate: (ids: readonly string[]) => ids.map((id) => entries.find((e) => e.record.instanceId === id) ?? (() => { throw new DomainError("InstanceNotFound", id); })()),
    saveRecord: async (e: InstanceEntry) => {
      saved.push(`${e.record.instanceId}=${e.record.internetMaxBandwidthOut ?? "none"}`);
    },
  };
  const caps = {
    checkInternet: (r: InstanceRecord) => {
      if (r.nics[0]?.subnetId !== "subnet-out") throw new DomainError("BadValue", `${r.instanceId}: no route out`);
    },
    sync: async () => {
      synced += 1;
    },
  } as unknown as BandwidthCaps;
  const registry = { touched: (id: string) => touched.push(id) } as unknown as InstanceRegistry;
  return { o: { ops, registry, caps }, saved, touched, synced: () => synced };
}

describe("ResetInstancesInternetMaxBandwidth", () => {
  it("saves every record with the new cap, then applies the caps before it answers", async () => {
    const h = harness([entry("ins-a", true, 30), entry("ins-b", true)]);
    await resetInternetMaxBandwidth(h.o, ["ins-a", "ins-b"], 5);
    expect(h.saved).toEqual(["ins-a=5", "ins-b=5"]);
    expect(h.touched).toEqual(["ins-a", "ins-b"]);
    expect(h.synced()).toBe(1);
  });

  it("removes the cap with 0", async () => {
    const h = harness([entry("ins-a", true, 30)]);
    await resetInternetMaxBandwidth(h.o, ["ins-a"], 0);
    expect(h.saved).toEqual(["ins-a=none"]);
  });

  it("changes nothing when one instance has no NIC on a subnet with a route out", async () => {
    const a = entry("ins-a", true, 30);
    const h = harness([a, entry("ins-b", false)]);
    await expect(resetInternetMaxBandwidth(h.o, ["ins-a", "ins-b"], 5)).rejects.toThrow(/no route out/);
    expect(a.record.internetMaxBandwidthOut).toBe(30);
    expect(h.saved).toEqual([]);
    expect(h.synced()).toBe(0);
  });
});
