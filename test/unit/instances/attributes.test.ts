/**
 * Termination protection and instance tags in the instance operations (on the stateful fake
 * hypervisor): DisableApiTermination kept in the record, TerminateInstances refused for the
 * whole request while any instance named has it, ModifyInstancesAttribute clearing it, both
 * kept across an agent restart; tags kept, shown and filtered.
 */
import { afterEach, describe, expect, it } from "vitest";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { DomainError } from "../../../agent/core/errors.js";
import { checkInstanceRecord } from "../../../agent/core/records.js";
import { selectInstances, toCvmInstance } from "../../../agent/instances/views.js";
import { ctx, makeHarness, runRequest, stateOf, until, type Harness } from "./harness.js";

let h: Harness;

afterEach(async () => {
  await h?.close();
});

async function codeOf(work: () => unknown): Promise<{ code: string; message: string }> {
  try {
    await work();
  } catch (error) {
    if (error instanceof DomainError) return { code: cvmCodeOf(error), message: error.message };
    throw error;
  }
  throw new Error("the request was accepted");
}

const HOST = { hostId: "host-test0001", zone: "zone-1" };

async function launch(extra: { disableApiTermination?: boolean; tags?: Array<{ key: string; value: string }> } = {}, count = 1): Promise<string[]> {
  const ids = await h.instances.launch.run({ ...runRequest(count), ...extra }, ctx());
  for (const id of ids) await until(h, id, "RUNNING");
  return ids;
}

describe("DisableApiTermination", () => {
  it("is kept in the record and shown by DescribeInstances; an instance launched without it shows false", async () => {
    h = await makeHarness();
    const [guarded] = await launch({ disableApiTermination: true });
    const [plain] = await launch();
    expect(h.registry.get(guarded!)!.record.disableApiTermination).toBe(true);
    expect(toCvmInstance(h.registry.get(guarded!)!, "RUNNING", HOST).DisableApiTermination).toBe(true);
    expect(toCvmInstance(h.registry.get(plain!)!, "RUNNING", HOST).DisableApiTermination).toBe(false);
  });

  it("makes TerminateInstances fail with UnsupportedOperation.InstancesProtected naming the instance, and nothing is terminated", async () => {
    h = await makeHarness();
    const [guarded] = await launch({ disableApiTermination: true });
    const [plain] = await launch();
    const refused = await codeOf(() => h.instances.terminate.terminate([plain!, guarded!], ctx("req-term")));
    expect(refused.code).toBe("UnsupportedOperation.InstancesProtected");
    expect(refused.message).toContain(guarded!);
    expect(refused.message).not.toContain(plain!);
    // All or nothing: the unprotected instance named with it was not touched either.
    await h.instances.ops.idle();
    expect(stateOf(h, plain!)).toBe("RUNNING");
    expect(stateOf(h, guarded!)).toBe("RUNNING");
    expect(h.registry.get(plain!)!.record.latestOperation?.action).toBe("RunInstances");
    expect((await h.journal.readAll()).entries).toEqual([]);
    // The DryRun path runs the same check.
    expect((await codeOf(() => h.instances.terminate.check([guarded!]))).code).toBe("UnsupportedOperation.InstancesProtected");
  });

  it("is cleared by ModifyInstancesAttribute, after which TerminateInstances terminates the instance", async () => {
    h = await makeHarness();
    const [guarded] = await launch({ disableApiTermination: true });
    await h.instances.attributes.modify([guarded!], { disableApiTermination: false });
    expect(h.registry.get(guarded!)!.record.disableApiTermination).toBeUndefined();
    await h.instances.terminate.terminate([guarded!], ctx());
    await h.instances.ops.idle();
    expect(h.registry.get(guarded!)).toBeUndefined();
  });

  it("set by ModifyInstancesAttribute is saved in the domain's record and still refuses TerminateInstances after a restart", async () => {
    h = await makeHarness();
    const [id] = await launch();
    await h.instances.attributes.modify([id!], { disableApiTermination: true });
    h = await h.restart();
    expect(h.registry.get(id!)!.record.disableApiTermination).toBe(true);
    expect((await codeOf(() => h.instances.terminate.terminate([id!], ctx()))).code).toBe("UnsupportedOperation.InstancesProtected");
  });

  it("ModifyInstancesAttribute is all or nothing: an unknown instance among the IDs changes none", async () => {
    h = await makeHarness();
    const [id] = await launch();
    expect((await codeOf(() => h.instances.attributes.modify([id!, "ins-zzzzzzzz"], { disableApiTermination: true }))).code).toBe("InvalidInstanceId.NotFound");
    expect(h.registry.get(id!)!.record.disableApiTermination).toBeUndefined();
  });

  it("ModifyInstancesAttribute refuses a PENDING instance with the state's code and changes nothing", async () => {
    h = await makeHarness();
    const [id] = await h.instances.launch.run(runRequest(), ctx());
    expect(stateOf(h, id!)).toBe("PENDING");
    expect((await codeOf(() => h.instances.attributes.modify([id!], { disableApiTermination: true }))).code).toBe("UnsupportedOperation.InstanceStatePending");
    expect(h.registry.get(id!)!.record.disableApiTermination).toBeUndefined();
    await until(h, id!, "RUNNING");
  });

  it("ModifyInstancesAttribute renames an instance, kept across a restart", async () => {
    h = await makeHarness();
    const [id] = await launch();
    await h.instances.attributes.modify([id!], { instanceName: "renamed" });
    h = await h.restart();
    expect(h.registry.get(id!)!.record.instanceName).toBe("renamed");
  });
});

describe("instance tags", () => {
  it("are kept in the record across a restart and shown as Tags [{Key, Value}]", async () => {
    h = await makeHarness();
    const [id] = await launch({ tags: [{ key: "team", value: "web" }, { key: "env", value: "" }] });
    h = await h.restart();
    const shown = toCvmInstance(h.registry.get(id!)!, "RUNNING", HOST);
    expect(shown.Tags).toEqual([{ Key: "team", Value: "web" }, { Key: "env", Value: "" }]);
  });

  it("select instances by tag-key, tag-value and tag:<key>; an instance without tags shows Tags []", async () => {
    h = await makeHarness();
    const [web] = await launch({ tags: [{ key: "team", value: "web" }] });
    const [db] = await launch({ tags: [{ key: "team", value: "db" }, { key: "backup", value: "daily" }] });
    const [bare] = await launch();
    const ids = (filters: Array<{ Name: string; Values: string[] }>) =>
      selectInstances({ registry: h.registry, host: HOST, filters, offset: 0, limit: 100 }).page.map((r) => r.entry.record.instanceId).sort();
    expect(ids([{ Name: "tag-key", Values: ["team"] }])).toEqual([web!, db!].sort());
    expect(ids([{ Name: "tag-key", Values: ["backup"] }])).toEqual([db!]);
    expect(ids([{ Name: "tag:team", Values: ["web"] }])).toEqual([web!]);
    expect(ids([{ Name: "tag:team", Values: ["web", "db"] }])).toEqual([web!, db!].sort());
    expect(ids([{ Name: "tag:backup", Values: ["web"] }])).toEqual([]);
    expect(ids([{ Name: "tag-value", Values: ["daily"] }])).toEqual([db!]);
    // ANDed with the other filters.
    expect(ids([{ Name: "tag-key", Values: ["team"] }, { Name: "instance-id", Values: [web!] }])).toEqual([web!]);
    expect(toCvmInstance(h.registry.get(bare!)!, "RUNNING", HOST).Tags).toEqual([]);
  });
});

describe("records written before issue 10", () => {
  it("without disableApiTermination or tags still load: they mean false and none", () => {
    const record = checkInstanceRecord({
      version: 1,
      instanceId: "ins-old00001",
      uuid: "u",
      instanceName: "old",
      instanceType: "CDH_1C1G",
      cpu: 1,
      memoryGiB: 1,
      imageId: "img-old00001",
      systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 10, path: "/var/lib/x.qcow2" },
      nics: [],
      createdTime: "2026-01-01T00:00:00Z",
      launchIndex: 0,
    });
    const entry = { record, power: "running" as const, launchFailed: false, reboots: 0 };
    const shown = toCvmInstance(entry, "RUNNING", HOST);
    expect(shown.DisableApiTermination).toBe(false);
    expect(shown.Tags).toEqual([]);
  });

  it("whose tags are not {key, value} fail their schema", () => {
    expect(() => checkInstanceRecord({ tags: [{ key: 1 }] })).toThrow(/not an instance record/);
  });
});
