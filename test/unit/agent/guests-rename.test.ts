/**
 * A rename (ModifyInstancesAttribute InstanceName) reaches what the guest sees: the metadata
 * trees and the config drive's documents are rendered anew, though the configuration
 * generation (what the guest re-applies) does not change.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { GuestDocumentsService } from "../../../agent/guests.js";
import { InstanceRegistry } from "../../../agent/instances/registry.js";
import type { KeyPairStore } from "../../../agent/logins/keypairs.js";
import type { InstanceRecord } from "../../../agent/model.js";
import { DataPaths } from "../../../agent/paths.js";
import { buildSite } from "../../../agent/metadata/tree.js";

const failClosed = <T extends object>(what: string) =>
  new Proxy({} as T, {
    get: (_t, name) => () => {
      throw new Error(`unexpected ${what} call: ${String(name)}`);
    },
  });

const SUBNET = { subnetId: "subnet-test0001", vpcId: "vpc-test0001", network: "net", bridge: "br", address: "10.9.0.0", prefixLength: 24, gateway: "10.9.0.1", dns: [] };

describe("a renamed instance, as its guest sees it", () => {
  let dir: string;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("shows the new name in the metadata tree and the config drive's documents", async () => {
    dir = await mkdtemp(join(tmpdir(), "guests-rename-"));
    const registry = new InstanceRegistry();
    const record: InstanceRecord = {
      version: 1,
      instanceId: "ins-rename01",
      uuid: "uuid-1",
      instanceName: "before",
      instanceType: "CDH_1C1G",
      cpu: 1,
      memoryGiB: 1,
      imageId: "img-aaaaaaaa",
      osType: "linux",
      systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 10, path: "/pool/x.qcow2" },
      nics: [{ mac: "52:54:00:00:00:01", network: "net", ipv4: "10.9.0.5", subnetId: SUBNET.subnetId, vpcId: SUBNET.vpcId }],
      createdTime: "2026-12-07T10:00:00Z",
      launchIndex: 0,
      configGeneration: 3,
    };
    registry.add({ record, power: "running", launchFailed: false, reboots: 0 });
    const guests = new GuestDocumentsService({
      runner: failClosed("runner"),
      hypervisor: failClosed("hypervisor"),
      paths: new DataPaths(dir),
      registry,
      keyPairs: { keysOfInstance: async () => [] } as unknown as KeyPairStore,
      host: { subnets: [SUBNET], hostId: "host-test0001", zone: "zone-1", region: "region-1", ntpServers: [] },
      logger: pino({ level: "silent" }),
    });
    const nameOf = () => {
      const view = guests.resolve("10.9.0.1", "10.9.0.5")!;
      const tree = buildSite(view.config, view.docs).get("/latest/meta-data/instance-name")?.body.toString();
      return { config: view.config.instanceName, docs: JSON.stringify(view.docs), tree };
    };
    expect(nameOf()).toMatchObject({ config: "before", tree: "before" });
    // The key pairs load once (in the background): rendered again then, and cached from there on.
    await new Promise((r) => setTimeout(r, 20));
    expect(nameOf()).toMatchObject({ config: "before", tree: "before" });
    record.instanceName = "after-rename";
    const now = nameOf();
    expect(now).toMatchObject({ config: "after-rename", tree: "after-rename" });
    expect(now.docs).toContain("after-rename");
    expect(now.docs).not.toContain('"before"');
    expect(record.configGeneration).toBe(3);
  });
});
