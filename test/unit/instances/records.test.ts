import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { FakeHypervisor } from "../../../drivers/testing/fake-hypervisor.js";
import { DiskStore } from "../../../agent/disks/store.js";
import { SnapshotService, type SnapshotServiceOptions } from "../../../agent/disks/snapshots.js";
import { InstanceRegistry } from "../../../agent/instances/registry.js";
import pino from "pino";
import { Journal } from "../../../agent/journal.js";
import { DataPaths } from "../../../agent/paths.js";
import { ctx, makeHarness, runRequest, until, type Harness } from "./harness.js";

let h: Harness | undefined;
let dir: string | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe("Journal.readAll", () => {
  it("sets aside an entry that is not JSON, fails its schema, or sits under another name; keeps the good one", async () => {
    dir = await mkdtemp(join(tmpdir(), "journal-"));
    const journal = new Journal(dir);
    h = await makeHarness();
    const [id] = await h.instances.launch.run(runRequest(), ctx());
    await until(h, id!, "RUNNING");
    const record = h.registry.get(id!)!.record;
    await journal.write({ kind: "terminate", instanceId: id!, record, requestId: "r", startedAt: "2026-01-01T00:00:00Z" });
    await writeFile(join(dir, "ins-aaaaaaaa.create.json"), '{"kind":"create","instanceId":"ins-aaaa');
    await writeFile(join(dir, "ins-bbbbbbbb.reset.json"), JSON.stringify({ kind: "reset", instanceId: "ins-bbbbbbbb", requestId: "r", startedAt: "t", oldPath: "/x" }));
    await writeFile(join(dir, "ins-cccccccc.terminate.json"), JSON.stringify({ kind: "terminate", instanceId: id, record, requestId: "r", startedAt: "t" }));

    const { entries, setAside } = await journal.readAll();

    expect(entries.map((e) => `${e.instanceId}.${e.kind}`)).toEqual([`${id}.terminate`]);
    expect(setAside.map((b) => b.file.split("/").pop()).sort()).toEqual(["ins-aaaaaaaa.create.json", "ins-bbbbbbbb.reset.json", "ins-cccccccc.terminate.json"]);
    expect(setAside.find((b) => b.file.endsWith("ins-bbbbbbbb.reset.json"))!.reason).toMatch(/record/);
    const files = await readdir(dir);
    expect(files.filter((f) => f.endsWith(".json")).sort()).toEqual([`${id}.terminate.json`]);
    expect(files.filter((f) => /\.json\.bad-/.test(f))).toHaveLength(3);
  });
});

describe("start-up with bad persisted records", () => {
  it("starts: a bad journal entry and a bad launch-failed record are set aside, a domain with a bad record is left alone", async () => {
    dir = await mkdtemp(join(tmpdir(), "records-"));
    const paths = new DataPaths(dir);
    await mkdir(paths.journalDir, { recursive: true });
    await mkdir(paths.launchFailedDir, { recursive: true });
    await writeFile(join(paths.journalDir, "ins-dddddddd.create.json"), "{}");
    await writeFile(join(paths.launchFailedDir, "ins-eeeeeeee.json"), JSON.stringify({ version: 1, instanceId: "ins-eeeeeeee", cpu: "two" }));
    const hv = new FakeHypervisor();
    hv.seed({
      name: "ins-ffffffff",
      uuid: "00000000-0000-4000-8000-00000000000f",
      virtType: "qemu",
      vcpus: 1,
      memoryMiB: 512,
      firmware: "bios",
      disks: [],
      nics: [],
      consoleLogPath: "/dev/null",
      guestAgent: false,
      vnc: false,
      smbios: { manufacturer: "", product: "", version: "", serial: "", family: "" },
      metadata: '{"version":1,"instanceId":"ins-ffffffff","nics":"none"}',
    });

    h = await makeHarness({ dir, hv });

    expect(h.registry.size).toBe(0);
    expect(hv.peek("ins-ffffffff")).toBeDefined();
    expect(hv.count("destroy") + hv.count("undefine") + hv.count("defineDomain")).toBe(0);
    expect((await readdir(paths.journalDir)).filter((f) => f.startsWith("ins-dddddddd.create.json.bad-"))).toHaveLength(1);
    expect((await readdir(paths.launchFailedDir)).filter((f) => f.startsWith("ins-eeeeeeee.json.bad-"))).toHaveLength(1);
    // And it works: a launch after such a start-up runs.
    const [id] = await h.instances.launch.run(runRequest(), ctx());
    await until(h, id!, "RUNNING");
    dir = undefined; // h.close removes it
  });
});

describe("DiskStore.load", () => {
  it("sets aside a disk record that fails its check or names another disk, with a warning, and loads the rest", async () => {
    dir = await mkdtemp(join(tmpdir(), "disks-"));
    const good = { version: 1, diskId: "disk-good0001", diskName: "d", diskType: "LOCAL_BASIC", pool: "local", sizeGiB: 10, path: "/srv/pool/disk-good0001.qcow2", deleteWithInstance: false, createdTime: "2026-01-01T00:00:00Z" };
    await writeFile(join(dir, "disk-good0001.json"), JSON.stringify(good));
    await writeFile(join(dir, "disk-bad00001.json"), JSON.stringify({ ...good, diskId: "disk-bad00001", path: "relative.qcow2" }));
    await writeFile(join(dir, "disk-other001.json"), JSON.stringify(good));
    await writeFile(join(dir, "disk-trunc001.json"), '{"version":1,');
    const warnings: Array<Record<string, unknown>> = [];
    const store = new DiskStore(dir, { warn: (o: object) => void warnings.push(o as Record<string, unknown>) });
    await store.load();
    expect([...store.all()].map((d) => d.diskId)).toEqual(["disk-good0001"]);
    expect(warnings.map((w) => String(w.file).split("/").pop()).sort()).toEqual(["disk-bad00001.json", "disk-other001.json", "disk-trunc001.json"]);
    expect((await readdir(dir)).filter((f) => f.includes(".json.bad-"))).toHaveLength(3);
  });
});

describe("SnapshotService.load", () => {
  it("sets aside a snapshot record that fails its check (a relative path, a bad state), with a warning; its file is not touched", async () => {
    dir = await mkdtemp(join(tmpdir(), "snapshots-"));
    const good = { version: 1, snapshotId: "snap-good0001", snapshotName: "s", diskId: "disk-good0001", diskUsage: "DATA_DISK", diskSizeGiB: 10, pool: "local", path: join(dir, "snap-good0001.qcow2"), state: "NORMAL", createdTime: "2026-01-01T00:00:00Z" };
    const victim = join(dir, "keep-me.qcow2");
    await writeFile(victim, "data");
    await writeFile(join(dir, "snap-good0001.json"), JSON.stringify(good));
    // CREATING would make load() remove its file: with a bad field it must not be trusted at all.
    await writeFile(join(dir, "snap-bad00001.json"), JSON.stringify({ ...good, snapshotId: "snap-bad00001", state: "CREATING", path: victim, diskSizeGiB: "ten" }));
    await writeFile(join(dir, "snap-rel00001.json"), JSON.stringify({ ...good, snapshotId: "snap-rel00001", path: "snap.qcow2" }));
    const disks = new DiskStore(join(dir, "disks"));
    await disks.load();
    const warnings: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => void warnings.push(String((JSON.parse(line) as { msg: string; file: string }).file)) });
    const failClosed = new Proxy({}, { get: (_t, name) => () => { throw new Error(`unexpected call ${String(name)}`); } });
    const service = new SnapshotService({ dir, disks, registry: new InstanceRegistry(), logger, quiesceMarker: (id: string) => id, checkpoint: () => undefined, exclusive: (_id: string, work: () => Promise<unknown>) => work(), storage: failClosed, hypervisor: failClosed, imageTool: failClosed } as unknown as SnapshotServiceOptions);
    await service.load();
    expect(service.describe({ filters: [], offset: 0, limit: 100 }).snapshots.map((x) => x.SnapshotId)).toEqual(["snap-good0001"]);
    expect(warnings.map((f) => f.split("/").pop()).sort()).toEqual(["snap-bad00001.json", "snap-rel00001.json"]);
    expect(await readdir(dir)).toContain("keep-me.qcow2");
  });
});
