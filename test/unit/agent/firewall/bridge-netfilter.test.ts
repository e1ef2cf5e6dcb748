import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ensureBridgeNetfilter } from "../../../../agent/network/firewall.js";
import { RecordingRunner } from "../../../support/recording-runner.js";

describe("ensureBridgeNetfilter", () => {
  let proc: string;
  const knob = () => join(proc, "sys/net/bridge/bridge-nf-call-iptables");
  beforeEach(async () => {
    proc = await mkdtemp(join(tmpdir(), "fw-proc-"));
  });
  afterEach(async () => {
    await rm(proc, { recursive: true, force: true });
  });

  it("sets bridge-nf-call-iptables to 1 when it is 0, and leaves a 1 alone", async () => {
    await mkdir(join(proc, "sys/net/bridge"), { recursive: true });
    await writeFile(knob(), "0\n");
    const runner = new RecordingRunner(); // no command may run
    await ensureBridgeNetfilter({ runner, procRoot: proc });
    expect((await readFile(knob(), "utf8")).trim()).toBe("1");
    await ensureBridgeNetfilter({ runner, procRoot: proc });
    expect(runner.runs).toEqual([]);
  });

  it("loads br_netfilter when the knob is missing, and refuses loudly when it stays missing", async () => {
    const runner = new RecordingRunner();
    runner.on(["modprobe", "br_netfilter"], { exitCode: 1, stderr: "modprobe: FATAL: Module br_netfilter not found" });
    await expect(ensureBridgeNetfilter({ runner, procRoot: proc })).rejects.toThrow(/br_netfilter is not available.*cannot be enforced/);
    expect(runner.commands).toEqual([["modprobe", "br_netfilter"]]);
  });
});
