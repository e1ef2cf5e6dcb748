/** DescribeInstances' order (creation time, then launch index), kept across calls and redone when membership changes. */
import { describe, expect, it } from "vitest";
import { InstanceRegistry } from "../../../agent/instances/registry.js";
import { selectInstances } from "../../../agent/instances/views.js";
import type { InstanceRecord } from "../../../agent/model.js";

const HOST = { hostId: "host-test0001", zone: "zone-1" };

function record(id: string, created: string, launchIndex: number): InstanceRecord {
  return {
    version: 1,
    instanceId: id,
    uuid: `uuid-${id}`,
    instanceName: id,
    instanceType: "CDH_1C1G",
    cpu: 1,
    memoryGiB: 1,
    imageId: "img-aaaaaaaa",
    systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 10, path: `/pool/${id}.qcow2` },
    nics: [],
    createdTime: created,
    launchIndex,
  };
}

const page = (registry: InstanceRegistry, offset = 0, limit = 100) =>
  selectInstances({ registry, host: HOST, offset, limit }).page.map((r) => r.entry.record.instanceId.slice(4, 5));

describe("DescribeInstances' order", () => {
  it("lists by creation time, then launch index, across calls, and takes in additions and removals", () => {
    const registry = new InstanceRegistry();
    const add = (id: string, created: string, index: number) => registry.add({ record: record(id, created, index), power: "shut off", launchFailed: false, reboots: 0 });
    add("ins-cccccccc", "2026-12-03T10:00:00Z", 0);
    add("ins-bbbbbbbb", "2026-12-02T10:00:00Z", 1);
    add("ins-aaaaaaaa", "2026-12-02T10:00:00Z", 0);
    expect(page(registry)).toEqual(["a", "b", "c"]);
    expect(page(registry, 1, 1)).toEqual(["b"]);
    add("ins-dddddddd", "2026-12-01T10:00:00Z", 0);
    expect(page(registry)).toEqual(["d", "a", "b", "c"]);
    registry.remove("ins-aaaaaaaa");
    expect(page(registry)).toEqual(["d", "b", "c"]);
    // A replaced entry (same ID, a new record) is seen too.
    registry.add({ record: record("ins-dddddddd", "2026-12-09T10:00:00Z", 0), power: "running", launchFailed: false, reboots: 0 });
    expect(page(registry)).toEqual(["b", "c", "d"]);
    expect(selectInstances({ registry, host: HOST, offset: 0, limit: 100 }).page.map((r) => r.state)).toEqual(["STOPPED", "STOPPED", "RUNNING"]);
  });
});
