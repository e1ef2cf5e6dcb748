/**
 * Guest traffic between tiny guests on one subnet, seen from inside the guests (probes
 * over their serial consoles, test/support/guest-net.ts).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type AgentProcess } from "../support/agent-process.js";
import { NetGuest, openNetGuests, TINY_PORTS } from "../support/guest-net.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

describe("traffic between tiny guests", () => {
  let agent: AgentProcess;
  let guests: NetGuest[] = [];

  beforeAll(async () => {
    const started = await agentWithTinyGuests({ repoRoot: inject("repoRoot"), imageName: "sg-traffic", count: 3 });
    agent = started.agent;
    guests = await openNetGuests(started.ids.map((id) => ({ instanceId: id, consoleLog: `${agent.dataDir}/instances/${id}/console.log` })));
  });

  afterAll(async () => {
    for (const g of guests) g.close();
    await agent?.shutdown();
  });

  it("each guest configures its NIC from the config drive, as DescribeInstances says", async () => {
    const d = await agent.client.DescribeInstances({ InstanceIds: guests.map((g) => g.instanceId) });
    for (const g of guests) {
      const inst = d.InstanceSet!.find((i) => i.InstanceId === g.instanceId)!;
      expect(inst.PrivateIpAddresses).toEqual([g.ip]);
      expect(g.net.nics[0]!.prefixLength).toBe(24);
      expect(g.gateway).toBe("10.201.0.1");
    }
  });

  it("two guests reach each other's TCP, UDP and ICMP responders", async () => {
    const [a, b] = guests as [NetGuest, NetGuest];
    const tcp = await a.probe({ proto: "tcp", to: b.ip, port: TINY_PORTS.tcp });
    expect(tcp).toEqual({ ok: true, reply: `CDH-TCP port=7001 id=${b.instanceId}` });
    const tcp2 = await b.probe({ proto: "tcp", to: a.ip, port: TINY_PORTS.tcp2 });
    expect(tcp2).toEqual({ ok: true, reply: `CDH-TCP port=7002 id=${a.instanceId}` });
    const udp = await a.probe({ proto: "udp", to: b.ip });
    expect(udp).toEqual({ ok: true, reply: `CDH-UDP port=7003 id=${b.instanceId}` });
    expect((await b.probe({ proto: "icmp", to: a.ip })).ok).toBe(true);
    // A port nobody listens on is refused at once: a probe can fail.
    expect(await a.probe({ proto: "tcp", to: b.ip, port: 7999 })).toEqual({ ok: false });
  });
});
