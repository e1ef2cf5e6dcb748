/**
 * What the agent refuses, through the official SDK and by hand-signed requests against
 * the real agent process: wrong signatures, malformed and unknown IDs, oversize bodies,
 * bad fields, capacity exhaustion (also under concurrent requests). Each refusal carries
 * the CVM error code and changes nothing: the same instances, domains and capacity after.
 */
import { execa } from "execa";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { signTc3 } from "../../agent/api/tc3.js";
import { importImage, sdkClient, startAgentProcess, waitForState, SECRET_ID, SECRET_KEY, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";

async function snapshot(agent: AgentProcess) {
  const instances = await agent.client.DescribeInstances({ Limit: 100 });
  const host = await agent.client.DescribeHosts({});
  const domains = (await execa("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])).stdout.split("\n").filter((n) => n.startsWith("ins-")).sort();
  return {
    instances: (instances.InstanceSet ?? []).map((i) => [i.InstanceId, i.InstanceState]).sort(),
    resource: host.HostSet?.[0]?.HostResource,
    domains,
  };
}

async function rawCall(port: number, action: string, body: string, options: { timestamp?: number; secretKey?: string } = {}) {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const authorization = signTc3({
    secretId: SECRET_ID,
    secretKey: options.secretKey ?? SECRET_KEY,
    service: "cvm",
    host: `127.0.0.1:${port}`,
    timestamp,
    payload: body,
    contentType: "application/json",
  });
  const response = await fetch(`http://127.0.0.1:${port}/`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Host: `127.0.0.1:${port}`,
      "X-TC-Action": action,
      "X-TC-Version": "2017-03-12",
      "X-TC-Timestamp": String(timestamp),
      Authorization: authorization,
    },
    body,
  });
  return { status: response.status, body: (await response.json()) as { Response: { Error?: { Code: string; Message: string } } } };
}

/**
 * Sends only the head of a signed request whose Content-Length announces `declared`
 * bytes, and reads the whole answer: a server that refuses by the declared length answers
 * without waiting for the body (sending the body too would race the server's close).
 */
async function headOnlyCall(port: number, action: string, declared: number): Promise<{ body: { Response: { Error?: { Code: string; Message: string } } } }> {
  const timestamp = Math.floor(Date.now() / 1000);
  const payload = "x".repeat(declared);
  const authorization = signTc3({ secretId: SECRET_ID, secretKey: SECRET_KEY, service: "cvm", host: `127.0.0.1:${port}`, timestamp, payload, contentType: "application/json" });
  const head =
    `POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n` +
    `X-TC-Action: ${action}\r\nX-TC-Version: 2017-03-12\r\nX-TC-Timestamp: ${timestamp}\r\nAuthorization: ${authorization}\r\n\r\n`;
  const raw = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(head));
    const chunks: Buffer[] = [];
    socket.setTimeout(10_000, () => socket.destroy(new Error("no answer to the head within 10 s")));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", reject);
    socket.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
  expect(raw).toMatch(/^HTTP\/1\.1 \d{3} /);
  return { body: JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4)) };
}

describe("refusals change nothing", () => {
  let agent: AgentProcess;
  let imageId: string;
  let running: string;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot"), env: { CDH_AGENT_CPU_ALLOCATION_RATIO: "2", CDH_AGENT_RESERVED_CPU: "0" } });
    imageId = await importImage(agent.client, images.raw.normal, "refusals");
    running = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } })).InstanceIdSet![0]!;
    await waitForState(agent.client, running, "RUNNING");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("refuses bad signatures, unknown keys and stale timestamps", async () => {
    const before = await snapshot(agent);
    await expect(sdkClient(agent.port, "wrong-key").DescribeInstances({})).rejects.toMatchObject({ code: "AuthFailure.SignatureFailure" });
    await expect(sdkClient(agent.port, SECRET_KEY, "AKIDunknown").StopInstances({ InstanceIds: [running], StopType: "HARD" })).rejects.toMatchObject({
      code: "AuthFailure.SecretIdNotFound",
    });
    const stale = await rawCall(agent.port, "StopInstances", JSON.stringify({ InstanceIds: [running], StopType: "HARD" }), { timestamp: Math.floor(Date.now() / 1000) - 301 });
    expect(stale.body.Response.Error?.Code).toBe("AuthFailure.SignatureExpire");
    expect(await snapshot(agent)).toEqual(before);
  });

  it("refuses malformed and unknown IDs, bad fields and oversize bodies", async () => {
    const before = await snapshot(agent);
    const c = agent.client;
    await expect(c.StopInstances({ InstanceIds: ["ins-1122"] })).rejects.toMatchObject({ code: "InvalidInstanceId.Malformed" });
    await expect(c.StopInstances({ InstanceIds: [running, "ins-zzzzzzzz"], StopType: "HARD" })).rejects.toMatchObject({ code: "InvalidInstanceId.NotFound" });
    await expect(c.StartInstances({ InstanceIds: [running] })).rejects.toMatchObject({ code: "UnsupportedOperation.InstanceStateRunning" });
    await expect(c.RunInstances({ InstanceType: "CDH_1C", ImageId: imageId })).rejects.toMatchObject({ code: "InvalidInstanceType.Malformed" });
    await expect(c.RunInstances({ InstanceType: "CDH_1C1G", ImageId: "img-1" })).rejects.toMatchObject({ code: "InvalidImageId.Malformed" });
    await expect(c.RunInstances({ InstanceType: "CDH_1C1G", ImageId: "img-zzzzzzzz" })).rejects.toMatchObject({ code: "InvalidImageId.NotFound" });
    await expect(c.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, Placement: { Zone: "z", HostId: "host-other000" } })).rejects.toMatchObject({
      code: "InvalidHostId.NotFound",
    });
    await expect(c.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, HostName: "-bad-" })).rejects.toMatchObject({ code: "InvalidParameterValue" });
    await expect(c.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, UserData: "not base64!" })).rejects.toMatchObject({ code: "InvalidParameterValue" });
    await expect(c.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, InstanceCount: 101 })).rejects.toMatchObject({ code: "InvalidParameterValue.Range" });
    const unknown = await rawCall(agent.port, "RunInstances", JSON.stringify({ InstanceType: "CDH_1C1G", ImageId: imageId, Bogus: 1 }));
    expect(unknown.body.Response.Error).toMatchObject({ Code: "InvalidParameter" });
    expect(unknown.body.Response.Error?.Message).toContain("Bogus");
    const typed = await rawCall(agent.port, "RunInstances", JSON.stringify({ InstanceType: "CDH_1C1G", ImageId: imageId, InstanceCount: "2" }));
    expect(typed.body.Response.Error?.Code).toBe("InvalidParameter");
    expect(typed.body.Response.Error?.Message).toContain("InstanceCount");
    const huge = await headOnlyCall(agent.port, "DescribeInstances", 2 * 1024 * 1024);
    expect(huge.body.Response.Error?.Code).toBe("InvalidParameter");
    await expect(c.DeleteImages({ ImageIds: [imageId, "img-zzzzzzzz"] })).rejects.toMatchObject({ code: "InvalidImageId.NotFound" });
    expect(await snapshot(agent)).toEqual(before);
  });

  it("refuses what does not fit, before anything is made, also when requests race", async () => {
    const before = await snapshot(agent);
    const free = before.resource!.CpuAvailable!;
    await expect(agent.client.RunInstances({ InstanceType: `CDH_${free + 1}C1G`, ImageId: imageId, SystemDisk: { DiskSize: 1 } })).rejects.toMatchObject({
      code: "ResourceInsufficient.SpecifiedInstanceType",
    });
    await expect(agent.client.RunInstances({ InstanceType: "CDH_1C4096G", ImageId: imageId, SystemDisk: { DiskSize: 1 } })).rejects.toMatchObject({
      code: "ResourceInsufficient.SpecifiedInstanceType",
    });
    expect(await snapshot(agent)).toEqual(before);

    // free + 2 requests of one vCPU each at once: exactly `free` fit.
    const results = await Promise.allSettled(
      Array.from({ length: free + 2 }, () => agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } })),
    );
    const ok = results.filter((r): r is PromiseFulfilledResult<{ InstanceIdSet?: string[] }> => r.status === "fulfilled");
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(ok).toHaveLength(free);
    expect(refused.map((r) => r.reason.code)).toEqual(Array(2).fill("ResourceInsufficient.SpecifiedInstanceType"));
    expect((await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!.CpuAvailable).toBe(0);
    const ids = ok.map((r) => r.value.InstanceIdSet![0]!);
    await Promise.all(ids.map((id) => waitForState(agent.client, id, "RUNNING")));
    await agent.client.TerminateInstances({ InstanceIds: ids });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await agent.client.DescribeInstances({ InstanceIds: ids })).TotalCount! > 0) await new Promise((r) => setTimeout(r, 300));
    expect(await snapshot(agent)).toEqual(before);
  });
});
