import { access, readdir } from "node:fs/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LibvirtError } from "../../../drivers/libvirt/types.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { DomainError } from "../../../agent/core/errors.js";
import { ApiError } from "../../../agent/errors.js";
import { ctx, makeHarness, runRequest, stateOf, until, type Harness } from "./harness.js";

let h: Harness;

afterEach(async () => {
  await h?.close();
});

async function codeOf(work: () => unknown): Promise<string> {
  try {
    await work();
  } catch (error) {
    // The code the API answers with (the edge's error map); anything else is a bug.
    if (error instanceof ApiError || error instanceof DomainError) return cvmCodeOf(error);
    throw error;
  }
  throw new Error("the request was accepted");
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function launchOne(): Promise<string> {
  const [id] = await h.instances.launch.run(runRequest(), ctx());
  await until(h, id!, "RUNNING");
  return id!;
}

describe("admission", () => {
  beforeEach(async () => {
    h = await makeHarness({ cpus: 4, memoryGiB: 8 });
  });

  it("refuses a batch that does not fit, with ResourceInsufficient.SpecifiedInstanceType, and reserves nothing", async () => {
    expect(await codeOf(() => h.instances.launch.run(runRequest(5, 1, 1), ctx()))).toBe("ResourceInsufficient.SpecifiedInstanceType");
    expect(h.registry.size).toBe(0);
    expect(h.hv.names()).toEqual([]);
  });

  it("admits two concurrent requests only as far as the host holds both: the second one is refused", async () => {
    const first = h.instances.launch.run(runRequest(3, 1, 2), ctx("req-1"));
    const second = h.instances.launch.run(runRequest(2, 1, 2), ctx("req-2"));
    const [a, b] = await Promise.allSettled([first, second]);
    expect(a.status).toBe("fulfilled");
    expect(b.status).toBe("rejected");
    expect(cvmCodeOf((b as PromiseRejectedResult).reason)).toBe("ResourceInsufficient.SpecifiedInstanceType");
    const ids = (a as PromiseFulfilledResult<string[]>).value;
    for (const id of ids) await until(h, id, "RUNNING");
    expect(h.hv.names()).toEqual([...ids].sort());
  });

  it("DryRun runs every check and makes nothing: a taken address is refused, a free one answers DryRunOperation", async () => {
    const id = await launchOne();
    const ip = h.registry.get(id)!.record.nics[0]!.ipv4!;
    const vpc = { vpcId: "vpc-test0001", subnetId: "subnet-test0001", privateIpAddress: ip };
    expect(await codeOf(() => h.instances.launch.run({ ...runRequest(), vpc, dryRun: true }, ctx()))).toBe("VpcIpIsUsed");
    expect(await codeOf(() => h.instances.launch.run({ ...runRequest(), vpc: { ...vpc, privateIpAddress: "10.9.0.200" }, dryRun: true }, ctx()))).toBe(
      "DryRunOperation",
    );
    expect(h.registry.size).toBe(1);
    expect(h.hv.names()).toEqual([id]);
  });
});

describe("a HARD stop pre-empts a SOFT one", () => {
  beforeEach(async () => {
    h = await makeHarness({ softStopTimeoutMs: 3000 });
  });

  it("a guest that ignores ACPI is STOPPING under SOFT; HARD stops it at once and the soft stop reports nothing", async () => {
    const id = await launchOne();
    h.hv.guest(id).acpi = "ignore";
    h.instances.powerOps.stop([id], "SOFT", ctx("req-soft"));
    expect(stateOf(h, id)).toBe("STOPPING");
    // The soft stop is under way: ACPI was pressed and the guest ignored it.
    await new Promise((r) => setTimeout(r, 100));
    expect(h.hv.count("shutdown", id)).toBeGreaterThanOrEqual(1);

    const started = Date.now();
    h.instances.powerOps.stop([id], "HARD", ctx("req-hard"));
    await until(h, id, "STOPPED", 1500);
    await h.instances.ops.idle();
    expect(Date.now() - started).toBeLessThan(1500);
    expect(h.hv.peek(id)!.state).toBe("shut off");
    expect(h.hv.count("destroy", id)).toBe(1);
    expect(h.registry.get(id)!.record.latestOperation).toEqual({ action: "StopInstances", state: "SUCCESS", requestId: "req-hard" });
  });

  it("a SOFT stop of a guest that ignores ACPI fails after the timeout, with FailedOperation, and leaves it RUNNING", async () => {
    await h.close();
    h = await makeHarness({ softStopTimeoutMs: 300 });
    const id = await launchOne();
    h.hv.guest(id).acpi = "ignore";
    h.instances.powerOps.stop([id], "SOFT", ctx("req-soft"));
    await h.instances.ops.idle();
    expect(stateOf(h, id)).toBe("RUNNING");
    expect(h.registry.get(id)!.record.latestOperation).toMatchObject({ action: "StopInstances", state: "FAILED", errorCode: "FailedOperation" });
    expect(h.hv.count("destroy", id)).toBe(0);
  });

  it("a SOFT stop cannot follow a SOFT stop in progress, a HARD one can", async () => {
    const id = await launchOne();
    h.hv.guest(id).acpi = "ignore";
    h.instances.powerOps.stop([id], "SOFT", ctx());
    expect(await codeOf(() => h.instances.powerOps.stop([id], "SOFT", ctx()))).toBe("UnsupportedOperation.InstanceStateStopping");
    h.instances.powerOps.stop([id], "HARD", ctx());
    await until(h, id, "STOPPED");
  });
});

describe("reinstall rollback", () => {
  beforeEach(async () => {
    h = await makeHarness();
  });

  it("a new system disk that does not boot: back onto the old disk, the new file and the journal entry gone, FAILED", async () => {
    const id = await launchOne();
    const old = structuredClone(h.registry.get(id)!.record);
    h.hv.guest(id).acpi = "obey";
    // Every disk file the reinstall makes in the pool is one the fake libvirt cannot boot.
    const poolFiles = new Set(await readdir(`${h.dir}/pool`));
    const start = h.hv.start.bind(h.hv);
    h.hv.start = async (name: string) => {
      for (const f of await readdir(`${h.dir}/pool`)) if (!poolFiles.has(f) && f.endsWith(".qcow2")) h.hv.unbootable.add(`${h.dir}/pool/${f}`);
      return start(name);
    };

    await h.instances.reinstall.reset({ instanceId: id }, ctx("req-reset"));
    expect(stateOf(h, id)).toBe("RESETTING");
    await h.instances.ops.idle();

    const record = h.registry.get(id)!.record;
    expect(record.systemDisk.path).toBe(old.systemDisk.path);
    expect(record.configGeneration).toBe(old.configGeneration);
    expect(record.latestOperation).toMatchObject({ action: "ResetInstance", state: "FAILED", requestId: "req-reset" });
    expect(h.hv.peek(id)!.spec.disks.map((d) => d.path)).toContain(old.systemDisk.path);
    expect(stateOf(h, id)).toBe("STOPPED");
    expect(await exists(old.systemDisk.path)).toBe(true);
    expect((await readdir(`${h.dir}/pool`)).filter((f) => !poolFiles.has(f))).toEqual([]);
    expect((await h.journal.readAll()).entries).toEqual([]);
    expect([...h.instances.reinstall.pendingResets.keys()]).toEqual([]);
  });

  it("a new disk that cannot be made: the instance keeps its old one and its state, FAILED", async () => {
    const id = await launchOne();
    const old = structuredClone(h.registry.get(id)!.record);
    h.tool.failNext("createOverlay", new Error("No space left on device"));
    await h.instances.reinstall.reset({ instanceId: id }, ctx("req-reset"));
    await h.instances.ops.idle();
    const record = h.registry.get(id)!.record;
    expect(record.systemDisk.path).toBe(old.systemDisk.path);
    expect(record.latestOperation).toMatchObject({ action: "ResetInstance", state: "FAILED", errorMessage: "No space left on device" });
    expect(h.hv.peek(id)!.spec.disks.map((d) => d.path)).toContain(old.systemDisk.path);
    expect((await h.journal.readAll()).entries).toEqual([]);
  });
});

describe("recovery after a restart", () => {
  beforeEach(async () => {
    h = await makeHarness();
  });

  it("finishes a launch journaled before the restart and adopts running instances with their records", async () => {
    const running = await launchOne();
    // A failed launch before the restart stays LAUNCH_FAILED after it.
    h.hv.failNext("defineDomain", new LibvirtError("libvirt went away"));
    const [pending] = await h.instances.launch.run(runRequest(), ctx("req-failed"));
    await h.instances.ops.idle();
    expect(stateOf(h, pending!)).toBe("LAUNCH_FAILED");
    // A launch journaled when the agent was killed: its entry is all there is.
    const entry = { kind: "create" as const, instanceId: "ins-crash001", record: { ...h.registry.get(running)!.record, instanceId: "ins-crash001", uuid: "00000000-0000-4000-8000-000000000001", nics: [{ ...h.registry.get(running)!.record.nics[0]!, mac: "52:54:00:00:00:99", ipv4: "10.9.0.99" }], systemDisk: { ...h.registry.get(running)!.record.systemDisk, path: `${h.dir}/pool/disk-crash001.qcow2`, diskId: "disk-crash001" } }, requestId: "req-crash", startedAt: "2026-01-01T00:00:00Z" };
    await h.journal.write(entry);

    const h2 = await h.restart();
    h = h2;
    await until(h, "ins-crash001", "RUNNING");
    await until(h, running, "RUNNING");
    expect(stateOf(h, pending!)).toBe("LAUNCH_FAILED");
    expect(h.hv.peek("ins-crash001")!.state).toBe("running");
    expect((await h.journal.readAll()).entries).toEqual([]);
    expect(h.registry.get("ins-crash001")!.record.latestOperation).toMatchObject({ action: "RunInstances", state: "SUCCESS", requestId: "req-crash" });
  });

  it("finishes a terminate journaled before the restart: the domain, its disk and the entry go", async () => {
    const id = await launchOne();
    const record = structuredClone(h.registry.get(id)!.record);
    await h.journal.write({ kind: "terminate", instanceId: id, record, requestId: "req-term", startedAt: "2026-01-01T00:00:00Z" });
    h = await h.restart();
    await h.instances.ops.idle();
    expect(h.registry.has(id)).toBe(false);
    expect(h.hv.names()).toEqual([]);
    expect(await exists(record.systemDisk.path)).toBe(false);
    expect((await h.journal.readAll()).entries).toEqual([]);
  });

  it("undoes a reinstall the restart cut short before the domain named the new disk", async () => {
    const id = await launchOne();
    const record = structuredClone(h.registry.get(id)!.record);
    const newPath = record.systemDisk.path.replace(/\.qcow2$/, "-r2.qcow2");
    await h.tool.createOverlay({ backing: "x", target: newPath, sizeBytes: 1 });
    await h.journal.write({ kind: "reset", instanceId: id, record: { ...record, systemDisk: { ...record.systemDisk, path: newPath } }, oldPath: record.systemDisk.path, requestId: "req-reset", startedAt: "2026-01-01T00:00:00Z" });
    h = await h.restart();
    await h.instances.ops.idle();
    expect(await exists(newPath)).toBe(false);
    expect(await exists(record.systemDisk.path)).toBe(true);
    expect(h.registry.get(id)!.record.latestOperation).toMatchObject({ action: "ResetInstance", state: "FAILED", requestId: "req-reset" });
    expect((await h.journal.readAll()).entries).toEqual([]);
  });

  it("adopts many domains a few hundred at a time, each with its own record and state", async () => {
    const id = await launchOne();
    const { spec } = h.hv.peek(id)!;
    const record = h.registry.get(id)!.record;
    // 600 more domains, each a copy of the first under its own name and record, every other one shut off.
    const ids = Array.from({ length: 600 }, (_, i) => `ins-m${String(i).padStart(7, "0")}`);
    for (const [i, copy] of ids.entries()) {
      await h.hv.defineDomain({ ...structuredClone(spec), name: copy, metadata: JSON.stringify({ ...record, instanceId: copy, instanceName: `many-${i}` }) });
      if (i % 2 === 0) await h.hv.start(copy);
    }
    const reads = h.hv.count("getDomains");
    h = await h.restart();
    expect(h.hv.count("getDomains") - reads).toBe(3); // 250 + 250 + 101
    expect(h.registry.size).toBe(601);
    expect(stateOf(h, id)).toBe("RUNNING");
    expect(ids.map((copy) => stateOf(h, copy))).toEqual(ids.map((_, i) => (i % 2 === 0 ? "RUNNING" : "STOPPED")));
    expect(ids.map((copy) => h.registry.get(copy)!.record.instanceName)).toEqual(ids.map((_, i) => `many-${i}`));
  });

  it("settles an operation a restart left OPERATING with no journal entry as FAILED, never OPERATING for ever", async () => {
    const id = await launchOne();
    const e = h.registry.get(id)!;
    e.record.latestOperation = { action: "RebootInstances", state: "OPERATING", requestId: "req-reboot" };
    await h.hv.setMetadata(id, JSON.stringify(e.record));
    h = await h.restart();
    await h.instances.ops.idle();
    expect(h.registry.get(id)!.record.latestOperation).toMatchObject({ action: "RebootInstances", state: "FAILED", requestId: "req-reboot" });
    expect(stateOf(h, id)).toBe("RUNNING");
  });
});

describe("CreateImage and DryRun run the same checks", () => {
  beforeEach(async () => {
    h = await makeHarness();
  });

  it("refuses a taken image name with InvalidImageName.Duplicate, with DryRun as without it", async () => {
    const id = await launchOne();
    h.imageNames.add("taken");
    expect(await codeOf(() => h.instances.capture.createImage({ instanceId: id, imageName: "taken", dryRun: true }, ctx()))).toBe("InvalidImageName.Duplicate");
    expect(await codeOf(() => h.instances.capture.createImage({ instanceId: id, imageName: "taken" }, ctx()))).toBe("InvalidImageName.Duplicate");
    expect(await codeOf(() => h.instances.capture.createImage({ instanceId: id, imageName: "free", dryRun: true }, ctx()))).toBe("DryRunOperation");
    expect(stateOf(h, id)).toBe("RUNNING");
  });
});

describe("ResizeInstanceDisks and DryRun run the same checks", () => {
  beforeEach(async () => {
    h = await makeHarness();
  });

  it("refuses a shrink and an off-step size with DryRun as without; a good DryRun changes nothing", async () => {
    const id = await launchOne();
    const base = { instanceId: id, dataDisks: [], resizeOnline: false, forceStop: true };
    for (const dryRun of [true, false]) {
      expect(await codeOf(() => h.instances.resize.resizeDisks({ ...base, systemDiskGiB: 5, dryRun }, ctx()))).toBe("InvalidParameterValue.DiskShrink");
      expect(await codeOf(() => h.instances.resize.resizeDisks({ ...base, systemDiskGiB: 15, dryRun }, ctx()))).toBe("InvalidParameterValue.DiskSizeNotMultipleOfStep");
    }
    expect(await codeOf(() => h.instances.resize.resizeDisks({ ...base, systemDiskGiB: 20, dryRun: true }, ctx()))).toBe("DryRunOperation");
    await h.instances.ops.idle();
    expect(h.registry.get(id)!.record.systemDisk.sizeGiB).toBe(10);
    expect(stateOf(h, id)).toBe("RUNNING");
    expect(h.tool.calls.filter((c) => c.method === "resize")).toEqual([]);
  });
});

describe("actions that answer once done (ISO)", () => {
  beforeEach(async () => {
    h = await makeHarness();
  });

  it("answer with the operation's own refusal, or InternalError with the host's message, as LatestOperation shows it", async () => {
    const id = await launchOne();
    h.hv.script("liveDiskTargets", async () => ["vda"]);
    expect(await codeOf(() => h.instances.iso.attachIso({ instanceId: id, file: `${h.dir}/x.iso`, url: "file:///x.iso" }, ctx()))).toBe(
      "UnsupportedOperation.InstanceStateRunning",
    );
    h.hv.script("liveDiskTargets", async () => ["vda", "hdd"]);
    h.hv.script("changeMedia", async () => {
      throw new Error("libvirt: internal error: unable to execute QEMU command");
    });
    expect(await codeOf(() => h.instances.iso.attachIso({ instanceId: id, file: `${h.dir}/x.iso`, url: "file:///x.iso" }, ctx("req-iso")))).toBe("InternalError");
    expect(h.registry.get(id)!.record.latestOperation).toMatchObject({
      action: "InstanceAttachISO",
      state: "FAILED",
      errorCode: "InternalError",
      errorMessage: "libvirt: internal error: unable to execute QEMU command",
    });
    expect(h.registry.get(id)!.record.iso).toBeUndefined();
  });
});
