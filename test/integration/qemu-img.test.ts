/** QemuImg against the real qemu-img, on files made in a temporary directory. */
import { mkdtemp, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRunner } from "../../drivers/exec/local.js";
import { ImageNotFoundError, ImageShrinkError, QemuImg } from "../../drivers/storage/qemu-img.js";

const MiB = 1024 * 1024;
const runner = new LocalRunner({ defaultTimeoutMs: 60_000 });
const tool = new QemuImg({ runner });

describe("QemuImg with the real qemu-img", () => {
  let dir: string;
  const path = (name: string) => join(dir, name);
  /** Formats the port cannot create (vmdk, vpc) are made with qemu-img directly. */
  const make = (format: string, name: string, size: string) =>
    runner.run(["qemu-img", "create", "-q", "-f", format, path(name), size]);

  beforeAll(async () => {
    dir = await mkdtemp("/var/tmp/drvtest-qemu-img-");
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("tells raw, qcow2, vmdk and vpc (VHD) apart by their content", async () => {
    await tool.create({ target: path("a.raw"), format: "raw", sizeBytes: 16 * MiB });
    await tool.create({ target: path("a.qcow2"), format: "qcow2", sizeBytes: 16 * MiB });
    await make("vmdk", "a.vmdk", "16M");
    await make("vpc", "a.vhd", "16M");
    const formats = await Promise.all(["a.raw", "a.qcow2", "a.vmdk", "a.vhd"].map(async (f) => (await tool.info(path(f))).format));
    expect(formats).toEqual(["raw", "qcow2", "vmdk", "vpc"]);
    const raw = await tool.info(path("a.raw"));
    expect(raw.virtualSizeBytes).toBe(16 * MiB);
    expect(raw.backingFile).toBeUndefined();
    expect((await tool.info(path("a.qcow2"))).corrupt).toBe(false);
  });

  it("reports qcow2 for a qcow2 file named .raw", async () => {
    await tool.create({ target: path("liar.qcow2"), format: "qcow2", sizeBytes: 8 * MiB });
    await rename(path("liar.qcow2"), path("liar.raw"));
    expect(await tool.info(path("liar.raw"))).toMatchObject({ format: "qcow2", virtualSizeBytes: 8 * MiB });
  });

  it("creates an overlay whose backing chain leads to the base image", async () => {
    await tool.create({ target: path("base.qcow2"), format: "qcow2", sizeBytes: 16 * MiB });
    await tool.createOverlay({ backing: path("base.qcow2"), backingFormat: "qcow2", target: path("top.qcow2"), sizeBytes: 32 * MiB });
    expect(await tool.info(path("top.qcow2"))).toMatchObject({
      format: "qcow2",
      virtualSizeBytes: 32 * MiB,
      backingFile: path("base.qcow2"),
      backingFormat: "qcow2",
    });
    const chain = await tool.backingChain(path("top.qcow2"));
    expect(chain.map((i) => [i.filename, i.format, i.virtualSizeBytes])).toEqual([
      [path("top.qcow2"), "qcow2", 32 * MiB],
      [path("base.qcow2"), "qcow2", 16 * MiB],
    ]);
  });

  it("converts a VHD into qcow2 with the same virtual size", async () => {
    const source = await tool.info(path("a.vhd"));
    await tool.convert({ source: path("a.vhd"), sourceFormat: "vhd", target: path("from-vhd.qcow2"), targetFormat: "qcow2" });
    expect(await tool.info(path("from-vhd.qcow2"))).toMatchObject({ format: "qcow2", virtualSizeBytes: source.virtualSizeBytes });
  });

  it("converts a qcow2 image named .raw only as what the caller says it is", async () => {
    // Told the truth (qcow2), the copy holds the guest-visible 8 MiB disk.
    await tool.convert({ source: path("liar.raw"), sourceFormat: "qcow2", target: path("liar-out.raw"), targetFormat: "raw" });
    expect((await stat(path("liar-out.raw"))).size).toBe(8 * MiB);
    // Told "raw", the qcow2 container itself is copied byte for byte: never probed.
    await tool.convert({ source: path("liar.raw"), sourceFormat: "raw", target: path("container.raw"), targetFormat: "raw" });
    const containerBytes = (await stat(path("liar.raw"))).size;
    expect((await stat(path("container.raw"))).size).toBe(Math.ceil(containerBytes / 512) * 512);
    expect((await tool.info(path("container.raw"))).format).toBe("qcow2");
  });

  it("grows images and refuses to shrink them", async () => {
    await tool.resize({ target: path("a.qcow2"), format: "qcow2", sizeBytes: 48 * MiB });
    await tool.resize({ target: path("a.raw"), format: "raw", sizeBytes: 20 * MiB });
    expect((await tool.info(path("a.qcow2"))).virtualSizeBytes).toBe(48 * MiB);
    expect((await tool.info(path("a.raw"))).virtualSizeBytes).toBe(20 * MiB);
    await expect(tool.resize({ target: path("a.qcow2"), format: "qcow2", sizeBytes: 16 * MiB })).rejects.toBeInstanceOf(
      ImageShrinkError,
    );
    expect((await tool.info(path("a.qcow2"))).virtualSizeBytes).toBe(48 * MiB);
  });

  it("says ImageNotFoundError for a file that does not exist", async () => {
    await expect(tool.info(path("nothing.qcow2"))).rejects.toBeInstanceOf(ImageNotFoundError);
  });
});
