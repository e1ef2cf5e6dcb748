/**
 * (j) AttachNetworkInterface to a running tiny guest until the NIC shows in the guest, against
 * `virsh attach-device --live --config` of the same interface XML (the agent's own builder:
 * the ENI's MAC, the subnet's network, its tap name, virtio) until the NIC shows, alternating
 * on one guest in the same run. "Shows in the guest": the guest's NIC list (`cdh-net nics` over
 * its serial console, asked every 50 ms, and the line it prints by itself on a change,
 * scripts/lib/tiny-net.sh) has the MAC. Ours also waits for the API's answer (the record, the
 * firewall, the drive saved): the figure is the later of the two. Between runs the NIC is taken
 * out again (DetachNetworkInterface, or virsh detach-device) and its absence waited for.
 */
import { createRequire } from "node:module";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type * as TencentCloudAll from "tencentcloud-sdk-nodejs";
import { buildNicXml } from "../drivers/libvirt/domain-xml.js";
import { tapName } from "../agent/network/firewall-types.js";
import { NetGuest, type TinyNics } from "../test/support/guest-net.js";
import { SECRET_ID, SECRET_KEY, waitForStates, type Agent } from "./agent.js";
import { LIBVIRT_URI, run } from "./host.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

type VpcClient = InstanceType<typeof TencentCloudAll.vpc.v20170312.Client>;

function vpcClient(port: number): VpcClient {
  const all = createRequire(import.meta.url)("tencentcloud-sdk-nodejs") as typeof TencentCloudAll;
  return new all.vpc.v20170312.Client({
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 120 } },
  });
}

const has = (mac: string) => (n: TinyNics) => n.nics.some((x) => x.mac === mac);

export async function benchEni(o: { agent: Agent; dataDir: string; imageId: string; workDir: string; runs: number; tracker: Tracker; log: (line: string) => void }): Promise<Row[]> {
  const { agent } = o;
  const vpc = vpcClient(agent.port);
  const id = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: o.imageId, SystemDisk: { DiskSize: 1 }, InstanceName: "bench-j" })).InstanceIdSet![0]!;
  o.tracker.instances.add(id);
  await waitForStates(agent.client, [id], "RUNNING", { timeoutMs: 120_000 });
  const guest = await NetGuest.open({ instanceId: id, consoleLog: join(o.dataDir, "instances", id, "console.log"), timeoutMs: 120_000 });
  try {
    const vm = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    const created = await vpc.CreateNetworkInterface({ VpcId: vm.VirtualPrivateCloud!.VpcId!, SubnetId: vm.VirtualPrivateCloud!.SubnetId!, NetworkInterfaceName: "bench-j" });
    const eniId = created.NetworkInterface!.NetworkInterfaceId!;
    const mac = created.NetworkInterface!.MacAddress!.toLowerCase();
    const network = (await run(["virsh", "-c", LIBVIRT_URI, "domiflist", id])).stdout.split("\n").map((l) => l.trim().split(/\s+/)).find((f) => f[0]?.startsWith("cdh"))?.[2];
    if (!network) throw new Error(`${id}: no network in virsh domiflist`);
    // The same XML the agent hot-plugs: the ENI's MAC, the subnet's network, the tap of slot 1, virtio.
    const xmlFile = join(o.workDir, "nic.xml");
    await run(["mkdir", "-p", o.workDir]);
    await writeFile(xmlFile, buildNicXml({ mac, source: { network }, targetDev: tapName(id, 1) }));
    const shows = (present: boolean) => guest.waitNics((n) => has(mac)(n) === present, { timeoutMs: 60_000, pollMs: 50, what: present ? "the NIC" : "no NIC" });

    const viaAgent = async (): Promise<number> => {
      const t0 = performance.now();
      let answered = 0;
      let seen = 0;
      await Promise.all([
        vpc.AttachNetworkInterface({ NetworkInterfaceId: eniId, InstanceId: id }).then(() => (answered = performance.now() - t0)),
        shows(true).then(() => (seen = performance.now() - t0)),
      ]);
      o.log(`  (j) ours: NIC in the guest after ${seen.toFixed(0)} ms, answer after ${answered.toFixed(0)} ms`);
      await vpc.DetachNetworkInterface({ NetworkInterfaceId: eniId, InstanceId: id });
      await shows(false);
      return Math.max(seen, answered);
    };
    const direct = async (): Promise<number> => {
      const t0 = performance.now();
      await Promise.all([run(["virsh", "-c", LIBVIRT_URI, "attach-device", "--domain", id, "--file", xmlFile, "--live", "--config"]), shows(true)]);
      const ms = performance.now() - t0;
      await run(["virsh", "-c", LIBVIRT_URI, "detach-device", "--domain", id, "--file", xmlFile, "--live", "--config"]);
      await shows(false);
      return ms;
    };
    // One of each first, not counted (the guest's first hot-plug loads virtio_net's paths).
    await viaAgent();
    await direct();
    const ours: number[] = [];
    const base: number[] = [];
    for (let i = 0; i < o.runs; i++) {
      if (i % 2 === 0) {
        ours.push(await viaAgent());
        base.push(await direct());
      } else {
        base.push(await direct());
        ours.push(await viaAgent());
      }
      await sleep(200);
    }
    await vpc.DeleteNetworkInterface({ NetworkInterfaceId: eniId });
    await rm(xmlFile, { force: true });
    o.log(`bench (j): ours ${ours.map((x) => x.toFixed(0)).join(" ")} ms; virsh attach-device ${base.map((x) => x.toFixed(0)).join(" ")} ms`);
    return [
      ratioRow({
        part: "j",
        what: `AttachNetworkInterface → the NIC in a running tiny guest (and the answer) (median of ${o.runs})`,
        ours: median(ours),
        baseline: median(base),
        unit: "ms",
        max: 1.2,
        note: "virsh attach-device --live --config of the same interface XML until the NIC shows",
      }),
    ];
  } finally {
    guest.close();
  }
}
