import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Hypervisor } from "../../../../drivers/libvirt/types.js";
import type { InstanceRegistry } from "../../../../agent/instances/registry.js";
import { DataPaths } from "../../../../agent/paths.js";
import type { Storage } from "../../../../agent/storage/storage.js";
import { InventorySweep } from "../../../../agent/storage/inventory.js";

describe("the inventory sweep and the firewall's leftovers", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "inventory-fw-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reports the chains and set elements the firewall says belong to no NIC, and keeps them in its last result", async () => {
    // Only what the sweep may call; anything else is missing and throws.
    const registry = { all: () => [][Symbol.iterator](), has: () => false } as unknown as InstanceRegistry;
    const storage = { files: () => [], pools: { list: () => [] } } as unknown as Storage;
    const hypervisor = { listDomains: async () => [] } as unknown as Hypervisor;
    const strays = ["inet cdh_filter chain nic_cdhaaaa00010_in", 'inet cdh_filter set nic_out element "br0" . 10.0.0.5'];
    const sweep = new InventorySweep({
      storage,
      registry,
      hypervisor,
      paths: new DataPaths(dir),
      hostId: "host-aaaa1111",
      graceMs: 60_000,
      firewallStrays: async () => strays,
      logger: pino({ level: "silent" }),
    });
    expect((await sweep.sweep()).firewallStrays).toEqual(strays);
    expect(sweep.lastResult().firewallStrays).toEqual(strays);
  });
});
