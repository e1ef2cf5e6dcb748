/**
 * (i) TCP throughput between two tiny guests on one subnet with a 100-rule security group
 * on each NIC (100 inbound and 100 outbound rules, the one that lets the flow through last),
 * against the same two guests with no agent table at all: the agent's inet and bridge tables
 * deleted for the baseline runs and rebuilt by the agent after them, in the same run. Runs
 * alternate (rules, none, none, rules, …) so drift hits both alike.
 *
 * The bytes move inside the guests (scripts/lib/tiny-net.sh): the sender pipes N MiB of
 * zeros from dd into busybox nc to the receiver's sink (TCP 7004, which counts them and
 * answers the count), timed in the sender from its /proc/uptime (10 ms steps); the test
 * side only asks over the serial console (test/support/guest-net.ts). Under TCG the guests
 * are slow; the ratio is the figure.
 */
import { createRequire } from "node:module";
import type * as TencentCloudAll from "tencentcloud-sdk-nodejs";
import { run } from "./host.js";
import { SECRET_ID, SECRET_KEY, waitForStates, type Agent } from "./agent.js";
import { median, ratioRow, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";
import { NetGuest } from "../test/support/guest-net.js";

type VpcClient = InstanceType<typeof TencentCloudAll.vpc.v20170312.Client>;

export interface ThroughputOptions {
  agent: Agent;
  dataDir: string;
  imageId: string;
  /** The agent's firewall tables (config firewall_nft_table). */
  table: string;
  /** Measurements of each kind. */
  runs: number;
  tracker: Tracker;
  log: (line: string) => void;
}

const RULES = 100;

function vpcClient(port: number): VpcClient {
  const all = createRequire(import.meta.url)("tencentcloud-sdk-nodejs") as typeof TencentCloudAll;
  return new all.vpc.v20170312.Client({
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 60 } },
  });
}

/** A group of 100 inbound and 100 outbound rules; the flow's own rule is the last of each. */
async function hundredRuleGroup(vpc: VpcClient, name: string): Promise<string> {
  const id = (await vpc.CreateSecurityGroup({ GroupName: name, GroupDescription: "bench (i)" })).SecurityGroup!.SecurityGroupId!;
  const misses = (proto: string) =>
    Array.from({ length: RULES - 1 }, (_, i) => ({ Protocol: proto, Port: String(20_000 + i), CidrBlock: `10.${100 + (i % 100)}.0.0/16`, Action: "ACCEPT" }));
  await vpc.CreateSecurityGroupPolicies({
    SecurityGroupId: id,
    SecurityGroupPolicySet: { Ingress: [...misses("TCP"), { Protocol: "TCP", Port: "7004", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] },
  });
  await vpc.CreateSecurityGroupPolicies({
    SecurityGroupId: id,
    SecurityGroupPolicySet: { Egress: [...misses("UDP"), { Protocol: "ALL", Port: "ALL", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] },
  });
  const set = (await vpc.DescribeSecurityGroupPolicies({ SecurityGroupId: id })).SecurityGroupPolicySet!;
  if (set.Ingress!.length !== RULES || set.Egress!.length !== RULES) throw new Error(`${id} holds ${set.Ingress!.length}/${set.Egress!.length} rules, not ${RULES}/${RULES}`);
  return id;
}

async function tablesPresent(table: string): Promise<boolean> {
  const inet = await run(["nft", "list", "table", "inet", table], { check: false });
  const bridge = await run(["nft", "list", "table", "bridge", table], { check: false });
  return inet.exitCode === 0 && bridge.exitCode === 0;
}

export async function benchGuestThroughput(o: ThroughputOptions): Promise<Row[]> {
  const { agent, tracker, log } = o;
  const vpc = vpcClient(agent.port);
  const groups = [await hundredRuleGroup(vpc, "bench-i-sender"), await hundredRuleGroup(vpc, "bench-i-receiver")];
  // Associated and disassociated to make the agent rebuild its tables after a baseline run.
  const spare = (await vpc.CreateSecurityGroup({ GroupName: "bench-i-spare", GroupDescription: "bench (i)" })).SecurityGroup!.SecurityGroupId!;
  const ids: string[] = [];
  for (const [i, group] of groups.entries()) {
    const r = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: o.imageId, SystemDisk: { DiskSize: 1 }, InstanceName: `bench-i-${i}`, SecurityGroupIds: [group] });
    const id = r.InstanceIdSet![0]!;
    tracker.instances.add(id);
    ids.push(id);
  }
  await waitForStates(agent.client, ids, "RUNNING", { timeoutMs: 120_000 });
  const [sender, receiver] = await Promise.all(ids.map((id) => NetGuest.open({ instanceId: id, consoleLog: `${o.dataDir}/instances/${id}/console.log`, timeoutMs: 120_000 })));
  try {
    const send = async (mb: number) => {
      const r = await sender!.sendBytes({ to: receiver!.ip, mb, timeoutMs: 120_000 });
      return r.bytes / 1024 / 1024 / Math.max(r.seconds, 0.01);
    };
    if (!(await tablesPresent(o.table))) throw new Error(`the agent's tables ${o.table} are not there to measure`);
    // Size a run to take a few seconds on this host.
    const probe = await send(8);
    const mb = Math.max(8, Math.min(256, Math.round(probe * 4)));
    log(`  (i) warm-up: ${probe.toFixed(1)} MiB/s with the rules; ${mb} MiB per run`);

    const withRules: number[] = [];
    const without: number[] = [];
    const measureWithout = async () => {
      await run(["nft", "delete", "table", "inet", o.table]);
      await run(["nft", "delete", "table", "bridge", o.table]);
      try {
        without.push(await send(mb));
      } finally {
        // Any change makes the agent sync; its in-place edit fails on the missing tables, so it rebuilds them whole.
        await agent.client.AssociateSecurityGroups({ SecurityGroupIds: [spare], InstanceIds: [receiver!.instanceId] });
        await agent.client.DisassociateSecurityGroups({ SecurityGroupIds: [spare], InstanceIds: [receiver!.instanceId] });
      }
      if (!(await tablesPresent(o.table))) throw new Error(`the agent did not rebuild its tables ${o.table} after a baseline run`);
    };
    const measureWith = async () => {
      withRules.push(await send(mb));
    };
    // ABBA: rules, none, none, rules, rules, none, …
    for (let i = 0; i < o.runs; i++) {
      if (i % 2 === 0) {
        await measureWith();
        await measureWithout();
      } else {
        await measureWithout();
        await measureWith();
      }
    }
    log(`  (i) with 100-rule groups: ${withRules.map((x) => x.toFixed(1)).join(", ")} MiB/s; no agent table: ${without.map((x) => x.toFixed(1)).join(", ")} MiB/s`);
    return [
      ratioRow({
        part: "i",
        what: `TCP between two tiny guests, 100+100-rule group on each NIC vs no agent table (${mb} MiB, median of ${o.runs})`,
        ours: median(withRules),
        baseline: median(without),
        unit: "MiB/s",
        min: 0.9,
      }),
    ];
  } finally {
    sender?.close();
    receiver?.close();
  }
}
