import { afterEach, describe, expect, it } from "vitest";
import { ctx, makeHarness, runRequest, stateOf, until, type Harness } from "./harness.js";

let h: Harness;
afterEach(async () => {
  await h?.close();
});

describe("the launch queue in RunInstances", () => {
  it("launches a batch larger than launch_concurrency in turn: every instance reaches RUNNING", async () => {
    h = await makeHarness({ launchConcurrency: 2 });
    const ids = await h.instances.launch.run(runRequest(6), ctx());
    expect(ids.map((id) => stateOf(h, id))).toEqual(Array(6).fill("PENDING"));
    for (const id of ids) await until(h, id, "RUNNING");
    expect(h.hv.names()).toEqual([...ids].sort());
  });

  it("a queued instance is PENDING like any launch: TerminateInstances refuses it until its turn has come and gone", async () => {
    h = await makeHarness({ launchConcurrency: 1 });
    const ids = await h.instances.launch.run(runRequest(3), ctx("req-run"));
    const last = ids[2]!;
    await expect(h.instances.terminate.terminate([last], ctx("req-terminate"))).rejects.toThrow(/not allowed .* in state PENDING/);
    await until(h, last, "RUNNING");
    await h.instances.terminate.terminate([last], ctx("req-terminate-2"));
    const deadline = Date.now() + 5000;
    while (h.registry.has(last) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(h.registry.has(last)).toBe(false);
    for (const id of ids.slice(0, 2)) await until(h, id, "RUNNING");
    expect(h.hv.names()).toEqual(ids.slice(0, 2).sort());
  });
});
