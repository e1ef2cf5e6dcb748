import { describe, expect, it } from "vitest";
import { parseCancelMigrateInstances, parseMigrateInstances, parseMigrationPeerStep } from "../../../../agent/api/schemas-migration.js";

describe("MigrateInstances' request", () => {
  it("takes the defaults: live, SOFT_FIRST, 2.5 s of downtime, 600 s, no post-copy", () => {
    expect(parseMigrateInstances({ InstanceIds: ["ins-abcd1234", "ins-abcd1234"], DestinationHostId: "host-abcd1234" })).toEqual({
      instanceIds: ["ins-abcd1234"],
      destinationHostId: "host-abcd1234",
      live: true,
      stopType: "SOFT_FIRST",
      maxDowntimeMs: 2500,
      deadlineS: 600,
      allowPostCopy: false,
      dryRun: false,
    });
  });

  it("refuses an endpoint that is not https://ADDRESS:PORT, a downtime out of range and unknown fields", () => {
    const base = { InstanceIds: ["ins-abcd1234"], DestinationHostId: "host-abcd1234" };
    expect(() => parseMigrateInstances({ ...base, DestinationEndpoint: "ftp://x" })).toThrow(/endpoint/);
    expect(() => parseMigrateInstances({ ...base, MaxDowntime: 5 })).toThrow();
    expect(() => parseMigrateInstances({ ...base, Force: true })).toThrow();
    expect(parseMigrateInstances({ ...base, DestinationEndpoint: "https://10.250.0.2:8620", Live: false, StopType: "HARD", Bandwidth: 50, AllowPostCopy: true })).toMatchObject({
      destinationEndpoint: "https://10.250.0.2:8620",
      live: false,
      stopType: "HARD",
      bandwidthMiBs: 50,
      allowPostCopy: true,
    });
  });

  it("CancelMigrateInstances takes instance IDs only", () => {
    expect(parseCancelMigrateInstances({ InstanceIds: ["ins-abcd1234"] })).toEqual({ instanceIds: ["ins-abcd1234"] });
    expect(() => parseCancelMigrateInstances({ InstanceIds: [] })).toThrow();
  });
});

describe("MigrationPeerStep's request", () => {
  it("names a step, a migration, an instance and its source", () => {
    const p = parseMigrationPeerStep({ Step: "commit", MigrationId: "0f8fad5b-d9cb-469f-a165-70867728950e", InstanceId: "ins-abcd1234", SourceHostId: "host-abcd1234" });
    expect(p).toEqual({ step: "commit", migrationId: "0f8fad5b-d9cb-469f-a165-70867728950e", instanceId: "ins-abcd1234", sourceHostId: "host-abcd1234" });
    expect(() => parseMigrationPeerStep({ Step: "explode", MigrationId: "0f8fad5b-d9cb-469f-a165-70867728950e", InstanceId: "ins-abcd1234", SourceHostId: "host-abcd1234" })).toThrow();
  });
});
