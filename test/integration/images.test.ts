/**
 * Images in full, through the official SDK against the real agent process, real
 * qemu-img and a real libvirtd: every importable format read from the content, the
 * seed's import error codes for what is refused (unknown formats, backing files,
 * truncated or oversize files, disks without a partition table), checksums, progress,
 * UEFI (OVMF) instances, one base file per content, bases kept while a disk backs onto
 * them and swept after, and SIGKILL in the middle of an import.
 */
import { execa } from "execa";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readdirSync, readFileSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { LocalRunner } from "../../drivers/exec/local.js";
import { QemuImg } from "../../drivers/storage/qemu-img.js";
import { ImageCatalog } from "../../agent/images/catalog.js";
import { toCvmImage } from "../../agent/images/views.js";
import { cvmCodeOf } from "../../agent/api/error-map.js";
import { DataPaths } from "../../agent/paths.js";
import { makeDataDir, startAgentProcess, waitForState, type AgentProcess, type CvmClient } from "../support/agent-process.js";
import { ensureTinyImages, type TinyImages } from "../support/tiny-image.js";
import { refused } from "../support/wait.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
const qemuImg = (...args: string[]) => execa("qemu-img", args);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Image = Record<string, unknown> & { ImageId: string; ImageState: string; SyncPercent?: number };

async function describeImage(client: CvmClient, imageId: string): Promise<Image | undefined> {
  return (await client.DescribeImages({ ImageIds: [imageId] })).ImageSet?.[0] as Image | undefined;
}

/** Starts an import and polls until it is no longer IMPORTING; returns the last view and every SyncPercent seen. */
async function importSettled(
  client: CvmClient,
  url: string,
  name: string,
  extra: { BootMode?: string; pollMs?: number; tags?: Array<{ Key: string; Value: string }> } = {},
): Promise<{ image: Image; progress: number[] }> {
  const r = await client.ImportImage({
    ImageUrl: url,
    ImageName: name,
    OsType: "Linux",
    OsVersion: "tiny",
    Architecture: "x86_64",
    ...(extra.BootMode ? { BootMode: extra.BootMode } : {}),
    ...(extra.tags ? { TagSpecification: [{ ResourceType: "image", Tags: extra.tags }] } : {}),
  });
  const progress: number[] = [];
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const image = await describeImage(client, r.ImageId!);
    if (!image) throw new Error(`image ${r.ImageId} vanished`);
    if (image.ImageState !== "IMPORTING") return { image, progress };
    progress.push(image.SyncPercent ?? -1);
    await sleep(extra.pollMs ?? 100);
  }
  throw new Error(`import of ${url} did not finish`);
}

function record(agent: AgentProcess, imageId: string): { baseFile?: string; sourceFormat?: string; contentSha256?: string } {
  return JSON.parse(readFileSync(join(agent.dataDir, "images", `${imageId}.json`), "utf8"));
}

function baseFiles(agent: AgentProcess): string[] {
  const dir = join(agent.dataDir, "images", "base");
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

function partialFiles(agent: AgentProcess): string[] {
  const dir = join(agent.dataDir, "images", "partial");
  return existsSync(dir) ? readdirSync(dir) : [];
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** A raw disk of `mib` MiB: the tiny image's MBR (so it passes the partition check), then random bytes. */
async function randomDisk(path: string, mib: number, tiny: TinyImages): Promise<void> {
  await execa("dd", [`if=/dev/urandom`, `of=${path}`, "bs=1M", `count=${mib}`, "status=none"]);
  const mbr = (await readFile(tiny.raw.normal)).subarray(0, 512);
  const fh = await open(path, "r+");
  await fh.write(mbr, 0, 512, 0);
  await fh.close();
}

/** A copy of the tiny disk with a marker in its unused tail: the same disk, different content (no shared base). */
async function variant(tiny: TinyImages, path: string, marker: string): Promise<void> {
  await copyFile(tiny.raw.normal, path);
  const size = (await stat(path)).size;
  const fh = await open(path, "r+");
  await fh.write(Buffer.from(marker), 0, marker.length, size - 4096);
  await fh.close();
}

describe("images through the official SDK", () => {
  let agent: AgentProcess;
  let tiny: TinyImages;
  let work: string;
  let http: Server;
  let httpPort: number;
  const MAX_IMAGE_BYTES = 2 * 1024 ** 3;

  beforeAll(async () => {
    tiny = await ensureTinyImages();
    work = await mkdtemp("/var/tmp/cdh-agent-tests/images-");
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      env: { CDH_AGENT_IMAGE_CACHE_SWEEP_SCHEDULE: "*/2 * * * * *", CDH_AGENT_MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES) },
    });
    // Files for the http:// imports, served on loopback only.
    http = createServer((req, res) => {
      const path = join(work, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
      if (!existsSync(path)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-length": String(readFileSync(path).length) });
      createReadStream(path).pipe(res);
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    httpPort = (http.address() as { port: number }).port;
  });

  afterAll(async () => {
    await agent?.shutdown();
    await new Promise((r) => http?.close(r));
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("imports qcow2, raw, vmdk and vhd, each recognised from its content (a qcow2 named .raw too)", async () => {
    const vmdk = join(work, "tiny.vmdk");
    const vhd = join(work, "tiny.vhd");
    const lying = join(work, "really-qcow2.raw");
    await qemuImg("convert", "-f", "raw", "-O", "vmdk", tiny.raw.normal, vmdk);
    await qemuImg("convert", "-f", "raw", "-O", "vpc", tiny.raw.normal, vhd);
    await copyFile(tiny.qcow2Normal, lying);
    const cases: Array<[string, string, string]> = [
      [tiny.raw.normal, "raw", "fmt-raw"],
      [tiny.qcow2Normal, "qcow2", "fmt-qcow2"],
      [vmdk, "vmdk", "fmt-vmdk"],
      [vhd, "vhd", "fmt-vhd"],
      [lying, "qcow2", "fmt-lying"],
    ];
    const bases = new Map<string, string>();
    for (const [path, format, name] of cases) {
      const { image } = await importSettled(agent.client, `file://${path}`, name);
      expect(image, name).toMatchObject({ ImageState: "NORMAL", SyncPercent: 100, ImageFormat: "qcow2", ImageSource: "IMPORT" });
      const rec = record(agent, image.ImageId);
      expect(rec.sourceFormat, name).toBe(format);
      bases.set(name, rec.baseFile!);
      // The base file is a standalone qcow2 holding exactly the tiny disk's bytes.
      const base = join(agent.dataDir, "images", rec.baseFile!);
      const info = JSON.parse((await qemuImg("info", "--output=json", "-U", base)).stdout);
      expect(info.format).toBe("qcow2");
      expect(info["backing-filename"]).toBeUndefined();
      const same = await execa("qemu-img", ["compare", "-U", "-f", "raw", "-F", "qcow2", tiny.raw.normal, base], { reject: false });
      expect(same.exitCode, `${name}: ${same.stdout}`).toBe(0);
    }
    // The same disk in four files and three formats: one base file in the cache. (qemu-img
    // rounds a VHD's size up to its CHS geometry: that disk is 16 KiB larger, so another one.)
    expect(new Set([bases.get("fmt-raw"), bases.get("fmt-qcow2"), bases.get("fmt-vmdk"), bases.get("fmt-lying")]).size).toBe(1);
    expect(bases.get("fmt-vhd")).not.toBe(bases.get("fmt-raw"));
    expect(baseFiles(agent)).toEqual([...new Set(bases.values())].map((b) => b.replace("base/", "")).sort());
  });

  it("keeps one base file for the same content imported twice, from any path; a one-byte difference gets its own", async () => {
    const copy = join(work, "another-name.img");
    await variant(tiny, copy, "shared-content");
    const a = await importSettled(agent.client, `file://${copy}`, "same-a");
    const before = baseFiles(agent);
    // Same size and same first sectors as the raw tiny import, but not the same disk.
    expect(before).toHaveLength(3);
    const moved = join(work, "moved.bin");
    await copyFile(copy, moved);
    const b = await importSettled(agent.client, `http://127.0.0.1:${httpPort}/moved.bin`, "same-b");
    expect(a.image.ImageState).toBe("NORMAL");
    expect(b.image.ImageState).toBe("NORMAL");
    expect(a.image.ImageId).not.toBe(b.image.ImageId);
    expect(record(agent, b.image.ImageId).baseFile).toBe(record(agent, a.image.ImageId).baseFile);
    expect(baseFiles(agent)).toEqual(before);
    const differs = join(work, "differs.img");
    await variant(tiny, differs, "shared-contenT");
    const c = await importSettled(agent.client, `file://${differs}`, "same-c");
    expect(c.image.ImageState).toBe("NORMAL");
    expect(record(agent, c.image.ImageId).baseFile).not.toBe(record(agent, a.image.ImageId).baseFile);
    expect(baseFiles(agent)).toHaveLength(4);
  });

  it("refuses other formats, backing files, truncated, oversize and overflowing files with the seed's codes, leaving nothing", async () => {
    const basesBefore = baseFiles(agent);
    const vdi = join(work, "tiny.vdi");
    await qemuImg("convert", "-f", "raw", "-O", "vdi", tiny.raw.normal, vdi);
    const vhdx = join(work, "tiny.vhdx");
    await qemuImg("convert", "-f", "raw", "-O", "vhdx", tiny.raw.normal, vhdx);
    // A qcow2 backing onto a file outside the cache, and one backing onto a base inside it.
    const outside = join(work, "overlay-outside.qcow2");
    await qemuImg("create", "-f", "qcow2", "-F", "qcow2", "-b", tiny.qcow2Normal, outside);
    const inside = join(work, "overlay-inside.qcow2");
    await qemuImg("create", "-f", "qcow2", "-F", "qcow2", "-b", join(agent.dataDir, "images", "base", basesBefore[0]!), inside);
    // Truncated: half of a qcow2, of a vmdk and of a dynamic vhd.
    const truncated: string[] = [];
    for (const [fmt, ext] of [["qcow2", "qcow2"], ["vmdk", "vmdk"], ["vpc", "vhd"]] as const) {
      const full = join(work, `full.${ext}`);
      const disk = join(work, "filled.raw");
      await randomDisk(disk, 16, tiny);
      await qemuImg("convert", "-f", "raw", "-O", fmt, disk, full);
      const bytes = await readFile(full);
      const half = join(work, `truncated.${ext}`);
      await writeFile(half, bytes.subarray(0, Math.floor(bytes.length / 2)));
      truncated.push(half);
    }
    // Over max_image_bytes (virtual size), and a header whose size cannot be represented.
    const oversize = join(work, "oversize.qcow2");
    await qemuImg("create", "-f", "qcow2", oversize, String(MAX_IMAGE_BYTES + 1024 ** 3));
    const overflow = join(work, "overflow.qcow2");
    await copyFile(tiny.qcow2Normal, overflow);
    const fh = await open(overflow, "r+");
    const size = Buffer.alloc(8);
    size.writeBigUInt64BE(0x7fff_ffff_ffff_fe00n);
    await fh.write(size, 0, 8, 24); // qcow2 header: virtual size at offset 24
    await fh.close();

    const cases: Array<[string, string, RegExp]> = [
      [vdi, "InvalidFormatSize", /format vdi/],
      [vhdx, "InvalidFormatSize", /format vhdx/],
      [outside, "InvalidFormatSize", /backing file/],
      [inside, "InvalidFormatSize", /backing file/],
      [truncated[0]!, "InvalidFormatSize", /damaged or truncated|not a readable/],
      [truncated[1]!, "InvalidFormatSize", /damaged or truncated|not a readable/],
      [truncated[2]!, "InvalidFormatSize", /truncated|not a readable/],
      [oversize, "InvalidFormatSize", /exceeds the limit/],
      [overflow, "InvalidFormatSize", /./],
    ];
    for (const [path, code, message] of cases) {
      const { image } = await importSettled(agent.client, `file://${path}`, `bad-${path.split("/").pop()}`);
      expect(image.ImageState, path).toBe("IMPORTFAILED");
      expect(image.ErrorCode, path).toBe(code);
      expect(String(image.ErrorMessage), path).toMatch(message);
      expect(image.SyncPercent).toBe(0);
    }
    expect(baseFiles(agent)).toEqual(basesBefore);
    expect(partialFiles(agent)).toEqual([]);
  });

  it("refuses a disk without a partition table or allowed filesystem, naming what it found", async () => {
    const zeros = join(work, "zeros.raw");
    await execa("truncate", ["-s", "64M", zeros]);
    const ext2 = join(work, "bare-ext2.raw");
    await execa("truncate", ["-s", "64M", ext2]);
    await execa("mkfs.ext2", ["-q", "-F", ext2]);
    const text = join(work, "notes.txt");
    await writeFile(text, "this is not a disk image\n".repeat(100));
    const z = await importSettled(agent.client, `file://${zeros}`, "no-table-zeros");
    expect(z.image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "PartitionNotPresent" });
    expect(String(z.image.ErrorMessage)).toContain("all zeros");
    const e = await importSettled(agent.client, `file://${ext2}`, "no-table-ext2");
    expect(e.image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "PartitionNotPresent" });
    expect(String(e.image.ErrorMessage)).toContain("bare ext2 filesystem");
    const t = await importSettled(agent.client, `file://${text}`, "no-table-text");
    expect(t.image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "PartitionNotPresent" });
    // A bare ext4 filesystem is allowed (seed: ext3/ext4).
    const ext4 = join(work, "bare-ext4.raw");
    await execa("truncate", ["-s", "64M", ext4]);
    await execa("mkfs.ext4", ["-q", "-F", ext4]);
    expect((await importSettled(agent.client, `file://${ext4}`, "bare-ext4")).image.ImageState).toBe("NORMAL");
    expect(partialFiles(agent)).toEqual([]);
  });

  it("checks a #sha256= checksum from file:// and http:// URLs: a match imports, a mismatch fails with InvalidUrl", async () => {
    const disk = join(work, "checksummed.raw");
    await variant(tiny, disk, "checksummed");
    const sha = await sha256Of(disk);
    const wrong = sha.replace(/^./, (c) => (c === "0" ? "1" : "0"));
    const ok = await importSettled(agent.client, `file://${disk}#sha256=${sha.toUpperCase()}`, "sum-ok");
    expect(ok.image.ImageState).toBe("NORMAL");
    const bad = await importSettled(agent.client, `file://${disk}#sha256=${wrong}`, "sum-bad");
    expect(bad.image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "InvalidUrl" });
    expect(String(bad.image.ErrorMessage)).toContain(sha);
    expect(String(bad.image.ErrorMessage)).toContain(wrong);
    const httpOk = await importSettled(agent.client, `http://127.0.0.1:${httpPort}/checksummed.raw#sha256=${sha}`, "sum-http-ok");
    expect(httpOk.image.ImageState).toBe("NORMAL");
    const httpBad = await importSettled(agent.client, `http://127.0.0.1:${httpPort}/checksummed.raw#sha256=${wrong}`, "sum-http-bad");
    expect(httpBad.image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "InvalidUrl" });
    const missing = await importSettled(agent.client, `http://127.0.0.1:${httpPort}/nothing-here.raw`, "http-404");
    expect(missing.image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "InvalidUrl" });
    // Malformed fragments are refused by the API itself.
    await expect(
      agent.client.ImportImage({ ImageUrl: `file://${disk}#md5=abc`, ImageName: "sum-malformed", OsType: "Linux", OsVersion: "x", Architecture: "x86_64" }),
    ).rejects.toMatchObject({ code: "InvalidParameter.InvalidParameterUrlError" });
    expect(partialFiles(agent)).toEqual([]);
  });

  it("shows the progress of a large import in SyncPercent", async () => {
    const big = join(work, "big.raw");
    await randomDisk(big, 768, tiny);
    const { image, progress } = await importSettled(agent.client, `file://${big}`, "progress", { pollMs: 30 });
    await rm(big, { force: true });
    expect(image).toMatchObject({ ImageState: "NORMAL", SyncPercent: 100 });
    const midway = progress.filter((p) => p > 0 && p < 100);
    expect(midway.length, `SyncPercent seen while IMPORTING: ${progress.join(",")}`).toBeGreaterThan(0);
    // Never going backwards.
    expect(progress).toEqual([...progress].sort((x, y) => x - y));
  });

  it("starts an instance of a UEFI image with OVMF firmware", async () => {
    const { image } = await importSettled(agent.client, `file://${tiny.raw.normal}`, "uefi-tiny", { BootMode: "UEFI" });
    expect(image).toMatchObject({ ImageState: "NORMAL", BootMode: "UEFI" });
    const run = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: image.ImageId, SystemDisk: { DiskSize: 1 } });
    const id = run.InstanceIdSet![0]!;
    try {
      await waitForState(agent.client, id, "RUNNING");
      expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
      const xml = (await virsh("dumpxml", id)).stdout;
      expect(xml).toMatch(/<loader[^>]*type=['"]pflash['"][^>]*>\/usr\/share\/OVMF\/OVMF_CODE_4M\.fd<\/loader>/);
      expect(xml).toMatch(/<nvram[^>]*>[^<]*nvram\.fd<\/nvram>/);
      // QEMU itself runs the OVMF code image as its firmware flash.
      const processes = (await execa("ps", ["-eo", "args", "--no-headers"])).stdout.split("\n");
      const qemu = processes.find((line) => line.includes("qemu-system") && line.includes(`guest=${id}`));
      expect(qemu, "the instance's QEMU process").toBeDefined();
      expect(qemu).toContain("/usr/share/OVMF/OVMF_CODE_4M.fd");
      await sleep(3000);
      expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
    } finally {
      await agent.client.TerminateInstances({ InstanceIds: [id] });
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && (await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount! > 0) await sleep(200);
    }
  });

  it("gives instances of an image tagged cdh:config-drive=nocloud a NoCloud (cidata) drive; others get config-2", async () => {
    const tags = [{ Key: "cdh:config-drive", Value: "nocloud" }, { Key: "owner", Value: "images-test" }];
    const { image } = await importSettled(agent.client, `file://${tiny.raw.normal}`, "nocloud-tiny", { tags });
    expect(image).toMatchObject({ ImageState: "NORMAL", Tags: tags });
    const bad = await refused(
      agent.client.ImportImage({
        ImageUrl: `file://${tiny.raw.normal}`,
        ImageName: "nocloud-bad",
        OsType: "Linux",
        OsVersion: "tiny",
        Architecture: "x86_64",
        TagSpecification: [{ ResourceType: "image", Tags: [{ Key: "cdh:config-drive", Value: "floppy" }] }],
      } as never),
    );
    expect(bad.code).toBe("InvalidParameterValue");
    expect(bad.message).toContain("TagSpecification.0.Tags.0.Value");

    const run = await agent.client.RunInstances({
      InstanceType: "CDH_1C1G",
      ImageId: image.ImageId,
      SystemDisk: { DiskSize: 1 },
      HostName: "nocloud-guest",
      LoginSettings: { KeepImageLogin: "TRUE" },
    });
    const id = run.InstanceIdSet![0]!;
    try {
      await waitForState(agent.client, id, "RUNNING");
      const drive = `${agent.dataDir}/instances/${id}/config.iso`;
      expect((await execa("blkid", ["-o", "value", "-s", "LABEL", drive])).stdout.trim()).toBe("cidata");
      const files = (await execa("xorriso", ["-indev", drive, "-find", "/", "-type", "f"], { stderr: "ignore" })).stdout;
      expect(files.split("\n").map((l) => l.replace(/'/g, "").trim()).filter(Boolean).sort()).toEqual(["/meta-data", "/network-config", "/user-data", "/vendor-data"]);
      expect(/local-hostname: "?nocloud-guest"?\n/.test((await readFile(drive)).toString("latin1")), "meta-data names the host").toBe(true);
      expect((await virsh("domblklist", id)).stdout).toContain(drive);
      // KeepImageLogin: shown as asked, and the drive sets no login (no password, keys or sshd settings).
      expect((await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.LoginSettings).toMatchObject({ KeepImageLogin: "TRUE" });
      const out = join(work, `${id}-vendor-data`);
      await execa("xorriso", ["-osirrox", "on", "-indev", drive, "-extract", "/vendor-data", out], { stderr: "ignore", stdout: "ignore" });
      const vendor = await readFile(out, "utf8");
      expect(vendor).toContain("#cloud-config");
      expect(vendor).toContain("nocloud-guest");
      for (const key of ["ssh_pwauth", "chpasswd", "ssh_authorized_keys", "disable_root"]) expect(vendor).not.toContain(key);
    } finally {
      await agent.client.TerminateInstances({ InstanceIds: [id] });
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && (await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount! > 0) await sleep(200);
    }
  });

  it("refuses DeleteImages of an image an instance uses, changing nothing; once the instance is gone it deletes and the sweep removes the base", async () => {
    const disk = join(work, "in-use.raw");
    await variant(tiny, disk, "in-use");
    const { image } = await importSettled(agent.client, `file://${disk}`, "in-use");
    expect(image.ImageState).toBe("NORMAL");
    const base = join(agent.dataDir, "images", record(agent, image.ImageId).baseFile!);
    const run = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: image.ImageId, SystemDisk: { DiskSize: 1 } });
    const id = run.InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");
    // The instance's disk backs onto the base (what the sweep walks).
    const blk = (await virsh("domblklist", id, "--details")).stdout.split("\n").map((l) => l.trim().split(/\s+/));
    const systemDisk = blk.find((f) => f[2] === "vda")?.[3];
    expect(systemDisk, "the instance's vda").toBeDefined();
    const chain = JSON.parse((await qemuImg("info", "--output=json", "-U", "--backing-chain", systemDisk!)).stdout);
    expect(chain.map((c: { filename: string }) => c.filename)).toContain(base);

    // In use (the API's USING rule): refused, with or without DryRun, and nothing changes.
    for (const dryRun of [true, false]) {
      const r = await refused(agent.client.DeleteImages({ ImageIds: [image.ImageId], DryRun: dryRun }));
      expect(r.code).toBe("InvalidImageId.IncorrectState");
      expect(r.message).toContain(id);
    }
    expect((await agent.client.DescribeImages({ ImageIds: [image.ImageId] })).ImageSet?.[0]?.ImageState).toBe("NORMAL");
    await sleep(4000); // two sweeps
    expect(existsSync(base)).toBe(true);
    expect((await virsh("domstate", id)).stdout.trim()).toBe("running");

    await agent.client.TerminateInstances({ InstanceIds: [id] });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount! > 0) await sleep(200);
    await agent.client.DeleteImages({ ImageIds: [image.ImageId] });
    expect((await agent.client.DescribeImages({ ImageIds: [image.ImageId] })).TotalCount).toBe(0);
    await expect(agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: image.ImageId })).rejects.toMatchObject({ code: "InvalidImageId.NotFound" });
    // The hand-out grace (30 s) keeps a base just given to a launch; after it, the sweep removes it.
    const goneBy = Date.now() + 60_000;
    while (Date.now() < goneBy && existsSync(base)) await sleep(500);
    expect(existsSync(base)).toBe(false);
  });
});

describe("images made from instances (beginImage / completeImage / failImage)", () => {
  let dataDir: string;
  let catalog: ImageCatalog;
  const logger = pino({ level: "silent" });
  const imageTool = new QemuImg({ runner: new LocalRunner() });
  const make = () =>
    new ImageCatalog({ paths: new DataPaths(dataDir), imageTool, logger, maxImageBytes: 1024 ** 4, downloadTimeoutMs: 60_000 });
  const meta = (imageName: string) => ({ imageName, osType: "Debian", osVersion: "12", architecture: "x86_64", bootMode: "Legacy BIOS" as const, source: "CREATE_IMAGE" as const });

  beforeAll(async () => {
    dataDir = await makeDataDir();
    catalog = make();
    await catalog.load();
  });

  afterAll(async () => {
    if (dataDir) await rm(join(dataDir, ".."), { recursive: true, force: true });
  });

  it("moves a finished standalone qcow2 from under the data directory into the cache, NORMAL with ImageSource CREATE_IMAGE", async () => {
    const id = await catalog.beginImage(meta("from-instance"));
    expect(toCvmImage(catalog.get(id)!)).toMatchObject({ ImageState: "CREATING", ImageSource: "CREATE_IMAGE" });
    expect(cvmCodeOf(await catalog.beginImage(meta("from-instance")).catch((e: unknown) => e))).toBe("InvalidImageName.Duplicate");
    await mkdir(join(dataDir, "pools", "local"), { recursive: true });
    const file = join(dataDir, "pools", "local", "made.qcow2");
    await qemuImg("create", "-f", "qcow2", file, "64M");
    await catalog.completeImage(id, file);
    expect(existsSync(file)).toBe(false);
    const usable = catalog.requireUsable(id);
    expect(usable).toMatchObject({ imageId: id, virtualSizeBytes: 64 * 1024 ** 2, bootMode: "Legacy BIOS" });
    expect(usable.path.startsWith(join(dataDir, "images", "base"))).toBe(true);
    expect(JSON.parse((await qemuImg("info", "--output=json", usable.path)).stdout).format).toBe("qcow2");
    expect(toCvmImage(catalog.get(id)!)).toMatchObject({ ImageState: "NORMAL", ImageSource: "CREATE_IMAGE", SyncPercent: 100 });
  });

  it("refuses a file with a backing file or outside the data directory (CREATEFAILED); failImage marks failures", async () => {
    const backing = join(dataDir, "tmp", "backing.qcow2");
    const overlay = join(dataDir, "tmp", "overlay.qcow2");
    await mkdir(join(dataDir, "tmp"), { recursive: true });
    await qemuImg("create", "-f", "qcow2", backing, "64M");
    await qemuImg("create", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay);
    const a = await catalog.beginImage(meta("with-backing"));
    await expect(catalog.completeImage(a, overlay)).rejects.toThrow(/backing file/);
    expect(catalog.get(a)).toMatchObject({ state: "CREATEFAILED" });
    expect(existsSync(overlay)).toBe(true);

    const elsewhere = join(await mkdtemp("/var/tmp/cdh-agent-tests/outside-"), "x.qcow2");
    await qemuImg("create", "-f", "qcow2", elsewhere, "64M");
    const b = await catalog.beginImage(meta("outside"));
    await expect(catalog.completeImage(b, elsewhere)).rejects.toThrow(/not under the data directory/);
    expect(existsSync(elsewhere)).toBe(true);
    await rm(join(elsewhere, ".."), { recursive: true, force: true });

    const c = await catalog.beginImage(meta("failed"));
    await catalog.failImage(c, "the guest agent did not answer");
    expect(toCvmImage(catalog.get(c)!)).toMatchObject({ ImageState: "CREATEFAILED", ErrorMessage: "the guest agent did not answer" });
  });

  it("never hands out a base file that vanished: the image is failed at start-up", async () => {
    const id = await catalog.beginImage(meta("base-vanishes"));
    const file = join(dataDir, "tmp", "vanishing.qcow2");
    await qemuImg("create", "-f", "qcow2", file, "64M");
    await catalog.completeImage(id, file);
    await rm(catalog.requireUsable(id).path);
    const again = make();
    await again.load();
    expect(again.get(id)).toMatchObject({ state: "CREATEFAILED" });
    let refusal: unknown;
    try {
      again.requireUsable(id);
    } catch (error) {
      refusal = error;
    }
    expect(cvmCodeOf(refusal)).toBe("InvalidImageId.IncorrectState");
  });

  it("sweeps by backing chains: a base under a two-level chain stays, an unreadable disk stops the sweep, an unused base goes", async () => {
    const tiny = await ensureTinyImages();
    let disks: string[] = [];
    const swept = new ImageCatalog({
      paths: new DataPaths(dataDir),
      imageTool,
      logger,
      maxImageBytes: 1024 ** 4,
      downloadTimeoutMs: 60_000,
      diskFiles: async () => disks,
    });
    await swept.load();
    const source = join(dataDir, "tmp", "sweep-source.raw");
    await variant(tiny, source, "sweep-by-chain");
    const id = await swept.startImport({ ImageUrl: `file://${source}`, ImageName: "sweep-chain", OsType: "Linux", OsVersion: "x", Architecture: "x86_64" });
    expect(await swept.whenSettled(id)).toMatchObject({ state: "NORMAL" });
    const base = join(dataDir, "images", swept.get(id)!.baseFile!);
    const mid = join(dataDir, "tmp", "mid.qcow2");
    const top = join(dataDir, "tmp", "top.qcow2");
    await qemuImg("create", "-f", "qcow2", "-F", "qcow2", "-b", base, mid);
    await qemuImg("create", "-f", "qcow2", "-F", "qcow2", "-b", mid, top);
    disks = [top];
    await swept.delete([id]);
    expect((await swept.sweep()).removed).toEqual([]);
    expect(existsSync(base)).toBe(true);
    // A disk whose backing file cannot be read: nothing is removed.
    disks = [top, join(dataDir, "tmp")];
    await expect(swept.sweep()).rejects.toThrow(/removes nothing/);
    disks = [];
    const result = await swept.sweep();
    expect(result.removed.map((f) => f.split("/").pop())).toContain(base.split("/").pop());
    expect(existsSync(base)).toBe(false);
  });

  it("marks an image still CREATING at start-up CREATEFAILED", async () => {
    const id = await catalog.beginImage(meta("interrupted"));
    const again = make();
    await again.load();
    expect(again.get(id)).toMatchObject({ state: "CREATEFAILED" });
    expect(again.get(id)?.errorMessage).toMatch(/agent stopped/);
  });
});

describe("SIGKILL in the middle of an import, then restart", () => {
  let agent: AgentProcess;
  let tiny: TinyImages;
  let work: string;

  beforeAll(async () => {
    tiny = await ensureTinyImages();
    work = await mkdtemp("/var/tmp/cdh-agent-tests/images-crash-");
    agent = await startAgentProcess({ repoRoot: inject("repoRoot"), env: { CDH_AGENT_IMAGE_CACHE_SWEEP_SCHEDULE: "*/2 * * * * *" } });
  });

  afterAll(async () => {
    await agent?.shutdown();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function killedAt(point: string, path: string, name: string): Promise<string> {
    await agent.kill("SIGTERM");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: point });
    // The import answers first and converts in the background, where the agent dies.
    const imageId = (await agent.client.ImportImage({ ImageUrl: `file://${path}`, ImageName: name, OsType: "Linux", OsVersion: "x", Architecture: "x86_64" })).ImageId;
    const dead = await Promise.race([
      agent.exited(),
      sleep(120_000).then(() => {
        throw new Error(`the agent never reached ${point}`);
      }),
    ]);
    expect(dead.signal).toBe("SIGKILL");
    expect(imageId).toBeDefined();
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: "" });
    return imageId!;
  }

  it("an import killed while converting is IMPORTFAILED after the restart, with no partial file kept", async () => {
    const big = join(work, "big.raw");
    await randomDisk(big, 512, tiny);
    const imageId = await killedAt("import:converting", big, "crash-converting");
    const image = await describeImage(agent.client, imageId);
    expect(image).toMatchObject({ ImageState: "IMPORTFAILED", ErrorCode: "InternalError" });
    expect(partialFiles(agent)).toEqual([]);
    expect(baseFiles(agent)).toEqual([]);
    // The same file imports fine afterwards, and the failed record can be deleted.
    const again = await importSettled(agent.client, `file://${big}`, "crash-converting-again");
    expect(again.image.ImageState).toBe("NORMAL");
    await agent.client.DeleteImages({ ImageIds: [imageId, again.image.ImageId] });
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && baseFiles(agent).length > 0) await sleep(500);
    expect(baseFiles(agent)).toEqual([]);
  });

  it("an import killed after its base file was placed but before the record said so leaves no kept base", async () => {
    const disk = join(work, "commit.raw");
    await variant(tiny, disk, "committing");
    const imageId = await killedAt("import:committing", disk, "crash-committing");
    expect(await describeImage(agent.client, imageId)).toMatchObject({ ImageState: "IMPORTFAILED" });
    // The base was in place when the agent died; the start-up sweep removes it (no record names it).
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && baseFiles(agent).length > 0) await sleep(500);
    expect(baseFiles(agent)).toEqual([]);
    expect(partialFiles(agent)).toEqual([]);
  });
});
