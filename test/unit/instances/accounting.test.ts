import { afterEach, describe, expect, it } from "vitest";
import { codeOf, ctx, IMAGE_ID, makeHarness, runRequest, until, type Harness } from "./harness.js";

let h: Harness;

afterEach(async () => {
  await h?.close();
});

const GiB = 1024 ** 3;
/** What the pool has promised (disks and the instances' configuration files), GiB. */
const promisedGiB = () => Math.round(h.storage.usage()[0]!.promisedBytes / GiB);

describe("the seeds' disk accounting", () => {
  it("promises each instance's 2 GB of configuration files with its system disk, in admission and in what is left", async () => {
    h = await makeHarness({ poolSizeGiB: 30, instanceOverheadGiB: 2 });
    const [id] = await h.instances.launch.run(runRequest(1), ctx()); // a 10 GiB system disk
    await until(h, id!, "RUNNING");
    expect(promisedGiB()).toBe(12);
    // 18 GiB left: one more 10 GiB instance fits (12), a second does not.
    expect(await codeOf(() => h.instances.launch.run(runRequest(2), ctx()))).toBe("ResourceInsufficient.SpecifiedInstanceType");
    const [second] = await h.instances.launch.run(runRequest(1), ctx());
    await until(h, second!, "RUNNING");
    expect(promisedGiB()).toBe(24);
  });

  it("a reinstall at the same size succeeds on a pool promised to within a few GiB; only growth is admitted", async () => {
    h = await makeHarness({ poolSizeGiB: 26, instanceOverheadGiB: 2 });
    const ids = await h.instances.launch.run(runRequest(2), ctx()); // 2 × (10 + 2) = 24 of 26 GiB
    for (const id of ids) await until(h, id, "RUNNING");
    expect(promisedGiB()).toBe(24);
    const id = ids[0]!;
    await h.instances.reinstall.reset({ instanceId: id, imageId: IMAGE_ID, systemDiskGiB: 10 }, ctx("req-reset"));
    await h.instances.ops.idle();
    expect(h.registry.get(id)!.record.latestOperation).toMatchObject({ action: "ResetInstance", state: "SUCCESS" });
    expect(promisedGiB()).toBe(24);
    // Growth within what is left (2 GiB) passes; beyond it is refused, nothing changed.
    await h.instances.reinstall.reset({ instanceId: id, imageId: IMAGE_ID, systemDiskGiB: 12 }, ctx("req-grow"));
    await h.instances.ops.idle();
    expect(h.registry.get(id)!.record.systemDisk.sizeGiB).toBe(12);
    expect(promisedGiB()).toBe(26);
    expect(await codeOf(() => h.instances.reinstall.reset({ instanceId: ids[1]!, imageId: IMAGE_ID, systemDiskGiB: 11 }, ctx("req-too-big")))).toMatch(/^ResourceInsufficient/);
    expect(h.registry.get(ids[1]!)!.record.systemDisk.sizeGiB).toBe(10);
  });
});
