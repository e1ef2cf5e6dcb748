/**
 * Fault battery: the agent's data directory (and so its one pool, its image cache and
 * its journal) on a small loop-mounted ext4 filesystem that fills up. An outside file
 * takes all but ~120 MiB; then an ImportImage of 300 MiB of data, a data-disk create
 * and a snapshot of a disk holding 200 MiB each end with a clear error and leave
 * nothing half made; the journal stays readable (a restart comes up with the same
 * disks and images), and once space is back the capacity is what it was and the same
 * snapshot is made.
 */
import { execa } from "execa";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, statfs } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { commonClient, importImage, startAgentProcess, TEST_DATA_ROOT, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";

const MiB = 1024 ** 2;
/** Room for one 10 GiB data disk (CBS's smallest) and little else: a sparse file, so it costs nothing until written. */
const FS_MIB = 10_752;
/** What the outside filler leaves free. */
const LEFT_MIB = 120;

async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

async function ls(dir: string): Promise<string[]> {
  return existsSync(dir) ? (await readdir(dir)).sort() : [];
}

describe("a pool on a small filesystem that fills up", () => {
  let work = "";
  let mnt = "";
  let loop = "";
  let agent: AgentProcess;
  let cbs: ReturnType<typeof commonClient>;
  let dataDir = "";
  let pool = "";
  let diskId = "";
  let bigRaw = "";
  let baseline: { diskAvailable: number; pool: string[]; images: string[]; imageIds: string[] };

  const filler = () => join(mnt, "filler");
  /** Images that are usable (a failed import stays listed as IMPORTFAILED, without a file). */
  const normalImages = async () =>
    ((await agent.client.DescribeImages({ Limit: 100 })).ImageSet ?? []).filter((i) => i.ImageState === "NORMAL").map((i) => i.ImageId!).sort();

  beforeAll(async () => {
    const images = await ensureTinyImages();
    await mkdir(TEST_DATA_ROOT, { recursive: true });
    work = await mkdtemp(join(TEST_DATA_ROOT, "faults-fs-"));
    await chmod(work, 0o755);
    mnt = join(work, "mnt");
    await mkdir(mnt, { mode: 0o755 });
    const img = join(work, "fs.img");
    await execa("truncate", ["-s", `${FS_MIB}M`, img]);
    await execa("mkfs.ext4", ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", img]);
    loop = (await execa("losetup", ["--find", "--show", img])).stdout.trim();
    await execa("mount", [loop, mnt]);
    await chmod(mnt, 0o755);
    dataDir = join(mnt, "data");
    await mkdir(dataDir, { mode: 0o711 });
    pool = join(dataDir, "pools", "local");
    // The tiny guest's disk (a valid partition table) followed by 300 MiB that does not
    // compress away: the import passes its checks and must write all of it.
    bigRaw = join(work, "big.raw");
    await execa("bash", ["-c", `cat ${images.raw.normal} > ${bigRaw} && head -c ${300 * MiB} /dev/urandom >> ${bigRaw}`]);

    agent = await startAgentProcess({ repoRoot: inject("repoRoot"), dataDir, env: { CDH_AGENT_RESERVED_DISK_GIB: "0" } });
    cbs = commonClient(agent.port);
    await importImage(agent.client, images.raw.normal, "faults-storage-tiny");
    diskId = ((await cbs.request("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, DiskName: "full", Placement: { Zone: "zone-1" } })) as { DiskIdSet: string[] }).DiskIdSet[0]!;
    // The disk holds 200 MiB of data, as a guest would have written.
    await execa("qemu-io", ["-f", "qcow2", "-c", `write -P 0x5a 0 ${200 * MiB}`, join(pool, `${diskId}.qcow2`)]);
    baseline = {
      diskAvailable: (await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!.DiskAvailable!,
      pool: await ls(pool),
      images: await ls(join(dataDir, "images")),
      imageIds: await normalImages(),
    };
    // Something else on the host takes the space.
    const free = await freeBytes(mnt);
    await execa("fallocate", ["-l", String(free - LEFT_MIB * MiB), filler()]);
    expect(await freeBytes(mnt)).toBeLessThan((LEFT_MIB + 8) * MiB);
  });

  afterAll(async () => {
    await agent?.shutdown().catch(() => undefined);
    if (mnt) await execa("umount", [mnt], { reject: false });
    if (loop) await execa("losetup", ["-d", loop], { reject: false });
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("ImportImage: a clear error, no partial file, the space given back", async () => {
    const before = await freeBytes(mnt);
    // The image is larger than what is free once converted: ImportImage accepts it (its size
    // is only known while converting), and the import fails saying why.
    const r = { imageId: (await agent.client.ImportImage({ ImageUrl: `file://${bigRaw}`, ImageName: "too-big", OsType: "Linux", OsVersion: "tiny", Architecture: "x86_64" })).ImageId! };
    const deadline = Date.now() + 120_000;
    let image = (await agent.client.DescribeImages({ ImageIds: [r.imageId] })).ImageSet![0]!;
    while (image.ImageState === "IMPORTING" && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 200));
      image = (await agent.client.DescribeImages({ ImageIds: [r.imageId] })).ImageSet![0]!;
    }
    expect(image.ImageState).toBe("IMPORTFAILED");
    expect((image as Record<string, unknown>).ErrorMessage).toMatch(/space/i);
    expect(await ls(join(dataDir, "images", "partial"))).toEqual([]);
    // The failed image keeps its record (DescribeImages shows it IMPORTFAILED, also after a
    // restart); the record's last write may still be in flight when the state shows, so a
    // temp file gets a few seconds to go, and must be gone by then.
    const kept = baseline.images.filter((f) => f !== "partial").concat([`${r.imageId}.json`]).sort();
    const settle = Date.now() + 5_000;
    let files = (await ls(join(dataDir, "images"))).filter((f) => f !== "partial").sort();
    while (files.some((f) => f.endsWith(".tmp")) && Date.now() < settle) {
      await new Promise((res) => setTimeout(res, 100));
      files = (await ls(join(dataDir, "images"))).filter((f) => f !== "partial").sort();
    }
    expect(files).toEqual(kept);
    expect(Math.abs((await freeBytes(mnt)) - before)).toBeLessThan(4 * MiB);
  });

  it("CreateDisks: refused with ResourceInsufficient, nothing made", async () => {
    const code = await cbs.request("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, DiskName: "nope", Placement: { Zone: "zone-1" } }).then(
      () => "accepted",
      (e: { code?: string }) => e.code,
    );
    expect(code).toBe("ResourceInsufficient");
    expect(await ls(pool)).toEqual(baseline.pool);
    const disks = (await cbs.request("DescribeDisks", { Limit: 100 })) as { TotalCount: number };
    expect(disks.TotalCount).toBe(1);
  });

  it("CreateSnapshot of a disk holding more than is free: a clear error, nothing made", async () => {
    const code = await cbs.request("CreateSnapshot", { DiskId: diskId, SnapshotName: "nope" }).then(
      () => "accepted",
      (e: { code?: string; message?: string }) => `${e.code}: ${e.message}`,
    );
    expect(code).toMatch(/^ResourceInsufficient: .*space/);
    const snaps = (await cbs.request("DescribeSnapshots", { Limit: 100 })) as { TotalCount: number };
    expect(snaps.TotalCount).toBe(0);
    expect(await ls(join(pool, "snapshots"))).toEqual([]);
    expect(await ls(join(dataDir, "snapshots"))).toEqual([]);
  });

  it("the journal is intact, a restart sees the same, and once space is back the capacity is whole", async () => {
    expect(await ls(join(dataDir, "journal"))).toEqual([]);
    await agent.kill("SIGTERM");
    await rm(filler());
    agent = await agent.restart();
    cbs = commonClient(agent.port);
    expect(await normalImages()).toEqual(baseline.imageIds);
    const disks = (await cbs.request("DescribeDisks", { Limit: 100 })) as { DiskSet: Array<{ DiskId: string }> };
    expect(disks.DiskSet.map((d) => d.DiskId)).toEqual([diskId]);
    expect(await ls(pool)).toEqual(baseline.pool);
    expect((await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!.DiskAvailable).toBe(baseline.diskAvailable);

    // With room again, the same snapshot is made.
    const snap = ((await cbs.request("CreateSnapshot", { DiskId: diskId, SnapshotName: "fits" })) as { SnapshotId: string }).SnapshotId;
    const deadline = Date.now() + 120_000;
    let state = "";
    while (Date.now() < deadline) {
      const s = (await cbs.request("DescribeSnapshots", { SnapshotIds: [snap] })) as { SnapshotSet: Array<{ SnapshotState: string }> };
      state = s.SnapshotSet[0]?.SnapshotState ?? "(gone)";
      if (state !== "CREATING") break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(state).toBe("NORMAL");
    await cbs.request("DeleteSnapshots", { SnapshotIds: [snap] });
    await cbs.request("TerminateDisks", { DiskIds: [diskId] });
  });
});
