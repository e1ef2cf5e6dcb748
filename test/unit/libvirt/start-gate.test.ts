/** VirshHypervisor.holdStartsUntil: at start-up no domain starts before the firewall's ruleset is loaded. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { VirshHypervisor } from "../../../drivers/libvirt/virsh.js";
import { RecordingRunner } from "../../support/recording-runner.js";

const URI = "qemu:///system";
const v = (...args: string[]) => ["virsh", "-c", URI, ...args];

describe("starts held until a promise settles", () => {
  let runner: RecordingRunner;
  let tmpDir: string;
  let hv: VirshHypervisor;
  beforeEach(async () => {
    runner = new RecordingRunner();
    tmpDir = await mkdtemp(join(tmpdir(), "start-gate-unit-"));
    hv = new VirshHypervisor({ runner, uri: URI, tmpDir, kvmUsable: async () => false });
  });
  afterEach(async () => {
    await rm(tmpDir, { recursive: true, force: true });
  });

  it("runs no virsh start before the promise resolves, and starts once it has", async () => {
    let open!: () => void;
    hv.holdStartsUntil(new Promise<void>((r) => (open = r)));
    runner.on(v("start", "--domain", "ins-aaaaaaaa"), { stdout: "Domain 'ins-aaaaaaaa' started\n" });
    let done = false;
    const started = hv.start("ins-aaaaaaaa").then(() => (done = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(runner.commands).toEqual([]);
    expect(done).toBe(false);
    open();
    await started;
    expect(runner.commands.map((c) => c[3])).toEqual(["start"]);
  });

  it("fails every start, without calling virsh, when the promise rejects", async () => {
    const refused = Promise.reject(new Error("nft refused the ruleset"));
    hv.holdStartsUntil(refused);
    await expect(hv.start("ins-aaaaaaaa")).rejects.toThrow("nft refused the ruleset");
    expect(runner.commands).toEqual([]);
  });
});
