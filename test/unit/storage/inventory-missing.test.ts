import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DomainSummary, Hypervisor } from "../../../drivers/libvirt/types.js";
import type { InstanceRegistry } from "../../../agent/instances/registry.js";
import { DataPaths } from "../../../agent/paths.js";
import type { Storage } from "../../../agent/storage/storage.js";
import { InventorySweep } from "../../../agent/storage/inventory.js";

/** Just what the sweep reads of an instance entry. */
interface Entry {
  record: { instanceId: string; systemDisk: { path: string } };
  launchFailed: boolean;
  transition?: object;
}

describe("the inventory sweep's missing domains", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "inventory-unit-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function sweep(entries: Entry[], listDomains: () => Promise<DomainSummary[]>): InventorySweep {
    const byId = new Map(entries.map((e) => [e.record.instanceId, e]));
    const registry = { all: () => byId.values(), has: (id: string) => byId.has(id) } as unknown as InstanceRegistry;
    // Only what the sweep may call; anything else is missing and throws.
    const storage = { files: () => [], pools: { list: () => [] } } as unknown as Storage;
    const hypervisor = { listDomains } as unknown as Hypervisor;
    return new InventorySweep({ storage, registry, hypervisor, paths: new DataPaths(dir), hostId: "host-aaaa1111", graceMs: 60_000, logger: pino({ level: "silent" }) });
  }

  it("reports an instance at rest whose domain libvirt does not list", async () => {
    const e: Entry = { record: { instanceId: "ins-aaaa1111", systemDisk: { path: "/nowhere/a" } }, launchFailed: false };
    const result = await sweep([e], async () => []).sweep();
    expect(result.missingDomains).toEqual(["ins-aaaa1111"]);
  });

  it("does not report a launch that ends while a slow libvirt lists: the listing began before its domain was defined", async () => {
    const e: Entry = { record: { instanceId: "ins-bbbb2222", systemDisk: { path: "/nowhere/b" } }, launchFailed: false, transition: { state: "PENDING" } };
    const result = await sweep([e], async () => {
      delete e.transition; // the launch finished during the listing
      return [];
    }).sweep();
    expect(result.missingDomains).toEqual([]);
  });
});
