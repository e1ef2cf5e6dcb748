import { describe, expect, it } from "vitest";
import { DOMSTATS_ARGS, collectDomainStats, parseDomStats } from "../../../../drivers/libvirt/domstats.js";
import { RecordingRunner } from "../../../support/recording-runner.js";

/** libvirt 9.0 output (virsh domstats --list-active --nowait …), one running domain with guest balloon statistics and one paused. */
export const SAMPLE = `Domain: 'ins-t977q9ko'
  state.state=1
  state.reason=1
  cpu.time=13160000000
  cpu.user=11620000000
  cpu.system=1540000000
  balloon.current=1048576
  balloon.maximum=1048576
  balloon.swap_in=0
  balloon.unused=800000
  balloon.available=1000000
  balloon.usable=900000
  balloon.last-update=1765100000
  balloon.rss=277416
  vcpu.current=2
  vcpu.maximum=2
  vcpu.0.state=1
  vcpu.0.time=10680000000
  vcpu.0.wait=0
  vcpu.0.delay=23398494843
  vcpu.1.state=1
  vcpu.1.time=320000000
  vcpu.1.wait=0
  vcpu.1.delay=1000
  net.count=1
  net.0.name=cdht977q9ko0
  net.0.rx.bytes=9488
  net.0.rx.pkts=126
  net.0.rx.errs=0
  net.0.rx.drop=2
  net.0.tx.bytes=11298
  net.0.tx.pkts=165
  net.0.tx.errs=1
  net.0.tx.drop=0
  block.count=3
  block.0.name=vda
  block.0.path=/var/lib/cdh-agent/pools/local/disk-8uow2v99.qcow2
  block.0.backingIndex=3
  block.0.rd.reqs=578
  block.0.rd.bytes=17252864
  block.0.rd.times=2487746644
  block.0.wr.reqs=10
  block.0.wr.bytes=40960
  block.0.wr.times=5000000
  block.0.fl.reqs=1
  block.0.fl.times=100
  block.0.allocation=0
  block.0.capacity=1073741824
  block.0.physical=204800
  block.1.name=hdc
  block.1.rd.reqs=11
  block.1.rd.bytes=18482
  block.1.rd.times=25930307
  block.1.wr.reqs=0
  block.1.wr.bytes=0
  block.1.wr.times=0
  block.1.fl.reqs=0
  block.1.fl.times=0
  block.2.name=hdd

Domain: 'ins-paused01'
  state.state=3
  state.reason=1
  cpu.time=100
  balloon.current=1048576
  balloon.maximum=1048576
  vcpu.current=1
  vcpu.maximum=1
  net.count=0
  block.count=0
`;

describe("parseDomStats", () => {
  it("reads every domain's counters, summing the vCPUs", () => {
    const [a, b] = parseDomStats(SAMPLE);
    expect(a).toMatchObject({
      name: "ins-t977q9ko",
      state: 1,
      cpuTimeNs: 13160000000,
      vcpus: 2,
      vcpuTimeNs: 11000000000,
      vcpuDelayNs: 23398495843,
      balloonCurrentKiB: 1048576,
      balloonAvailableKiB: 1000000,
      balloonUsableKiB: 900000,
      balloonUnusedKiB: 800000,
      balloonLastUpdate: 1765100000,
    });
    expect(a!.nics).toEqual([{ name: "cdht977q9ko0", rxBytes: 9488, rxPkts: 126, rxErrs: 0, rxDrop: 2, txBytes: 11298, txPkts: 165, txErrs: 1, txDrop: 0 }]);
    expect(a!.blocks.map((x) => x.name)).toEqual(["vda", "hdc"]);
    expect(a!.blocks[0]).toMatchObject({ rdReqs: 578, wrBytes: 40960, wrTimesNs: 5000000, flReqs: 1 });
    expect(b).toMatchObject({ name: "ins-paused01", state: 3, cpuTimeNs: 100, vcpus: 1, nics: [], blocks: [] });
    expect(b!.balloonAvailableKiB).toBeUndefined();
  });

  it("leaves out a disk without counters (an empty tray, or skipped under --nowait)", () => {
    expect(parseDomStats(SAMPLE)[0]!.blocks.some((x) => x.name === "hdd")).toBe(false);
  });

  it("gives nothing for empty output", () => {
    expect(parseDomStats("")).toEqual([]);
  });
});

describe("collectDomainStats", () => {
  it("issues one virsh domstats --nowait for all active domains, with the deadline given", async () => {
    const runner = new RecordingRunner();
    runner.on((argv) => argv.includes("domstats"), { stdout: SAMPLE });
    const got = await collectDomainStats({ runner, uri: "qemu:///system" }, 4000);
    expect(got).toHaveLength(2);
    expect(runner.commands).toEqual([["virsh", "-c", "qemu:///system", ...DOMSTATS_ARGS]]);
    expect(runner.runs[0]!.options?.timeoutMs).toBe(4000);
    expect(DOMSTATS_ARGS).toContain("--nowait");
    expect(DOMSTATS_ARGS).toContain("--list-active");
  });
});
