import pino from "pino";
import { describe, expect, it } from "vitest";
import { migrateNicDefinitions, needsNicMigration } from "../../../../agent/network/nic-migration.js";
import type { InstanceRecord } from "../../../../agent/model.js";
import type { DomainDetails, DomainSpec } from "../../../../drivers/libvirt/types.js";

const nic = (extra: Partial<DomainSpec["nics"][number]>): DomainSpec["nics"][number] => ({ mac: "52:54:00:00:00:01", source: { network: "n" }, ...extra });

describe("redefining domains made before the firewall", () => {
  it("knows an old definition: a clean-traffic filterref, or a tap name that is not tapName()", () => {
    expect(needsNicMigration("ins-abcd1234", { nics: [nic({ filter: { name: "clean-traffic", parameters: { IP: "10.0.0.5" } } })] })).toBe(true);
    expect(needsNicMigration("ins-abcd1234", { nics: [nic({})] })).toBe(true);
    expect(needsNicMigration("ins-abcd1234", { nics: [nic({ targetDev: "vnet3" })] })).toBe(true);
    expect(needsNicMigration("ins-abcd1234", { nics: [nic({ targetDev: "cdhabcd12340" }), nic({ targetDev: "cdhabcd12341" })] })).toBe(false);
  });

  it("redefines exactly the old ones from their records, each under the instance's lock, and goes on past a failure", async () => {
    const rec = (id: string) => ({ instanceId: id }) as InstanceRecord;
    const details = (n: DomainSpec["nics"][number]): DomainDetails => ({ spec: { nics: [n] } as DomainSpec, state: "running" });
    const domains = new Map<string, DomainDetails>([
      ["ins-aaaa0001", details(nic({ filter: { name: "clean-traffic", parameters: {} } }))],
      ["ins-bbbb0002", details(nic({ targetDev: "cdhbbbb00020" }))],
      ["ins-cccc0003", details(nic({}))],
      ["ins-dddd0004", details(nic({}))],
    ]);
    const defined: string[] = [];
    const locked: string[] = [];
    // What start-up recovery hands over: the ones whose definition, as it read it, is old.
    const candidates = new Set([...domains].filter(([id, d]) => needsNicMigration(id, d.spec)).map(([id]) => id));
    const migrated = await migrateNicDefinitions({
      candidates,
      hypervisor: {
        defineDomain: async (spec) => {
          if (spec.name === "ins-cccc0003") throw new Error("libvirt said no");
          defined.push(spec.name);
        },
      },
      instances: () => ["ins-aaaa0001", "ins-bbbb0002", "ins-cccc0003", "ins-dddd0004", "ins-eeee0005"].map(rec),
      specOf: (r) => ({ name: r.instanceId }) as DomainSpec,
      exclusive: async (id, work) => {
        locked.push(id);
        await work();
      },
      logger: pino({ level: "silent" }),
    });
    expect(defined).toEqual(["ins-aaaa0001", "ins-dddd0004"]);
    expect(migrated).toEqual(["ins-aaaa0001", "ins-dddd0004"]);
    expect(locked).toEqual(["ins-aaaa0001", "ins-cccc0003", "ins-dddd0004"]);
  });
});
