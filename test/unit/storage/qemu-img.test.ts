import { describe, expect, it } from "vitest";
import { ExecError } from "../../../drivers/exec/runner.js";
import {
  ImageNotFoundError,
  ImageShrinkError,
  ImageToolError,
  QemuImg,
  qemuFormatName,
  UnsupportedImageFormatError,
} from "../../../drivers/storage/qemu-img.js";
import { RecordingRunner } from "../../support/recording-runner.js";

const qcow2Info = (file: string, size: number, extra: object = {}) => ({
  "virtual-size": size,
  filename: file,
  "cluster-size": 65536,
  format: "qcow2",
  "actual-size": 200704,
  "format-specific": { type: "qcow2", data: { compat: "1.1", corrupt: false } },
  "dirty-flag": false,
  ...extra,
});

describe("QemuImg", () => {
  it("reads info with --force-share and without naming a format", async () => {
    const runner = new RecordingRunner().on(["qemu-img", "info", "--output=json", "--force-share", "/i/a.raw"], {
      stdout: JSON.stringify(qcow2Info("/i/a.raw", 16777216)),
    });
    expect(await new QemuImg({ runner }).info("/i/a.raw")).toEqual({
      format: "qcow2",
      virtualSizeBytes: 16777216,
      actualSizeBytes: 200704,
      corrupt: false,
    });
  });

  it("reports vpc as the format of a VHD image", async () => {
    const runner = new RecordingRunner().on(() => true, {
      stdout: JSON.stringify({ "virtual-size": 16781312, filename: "v.vhd", format: "vpc", "actual-size": 4096 }),
    });
    expect((await new QemuImg({ runner }).info("v.vhd")).format).toBe("vpc");
  });

  it("reads the whole backing chain, top first, with absolute backing paths", async () => {
    const chain = [
      qcow2Info("o.qcow2", 33554432, {
        "backing-filename": "b.qcow2",
        "full-backing-filename": "/i/b.qcow2",
        "backing-filename-format": "qcow2",
      }),
      qcow2Info("/i/b.qcow2", 16777216),
    ];
    const runner = new RecordingRunner().on(
      ["qemu-img", "info", "--output=json", "--force-share", "--backing-chain", "o.qcow2"],
      { stdout: JSON.stringify(chain) },
    );
    const result = await new QemuImg({ runner }).backingChain("o.qcow2");
    expect(result.map((i) => [i.filename, i.format, i.virtualSizeBytes, i.backingFile, i.backingFormat])).toEqual([
      ["o.qcow2", "qcow2", 33554432, "/i/b.qcow2", "qcow2"],
      ["/i/b.qcow2", "qcow2", 16777216, undefined, undefined],
    ]);
  });

  it("converts with the source format named explicitly and a long timeout", async () => {
    const runner = new RecordingRunner().on(() => true, {});
    await new QemuImg({ runner, convertTimeoutMs: 123 }).convert({
      source: "/i/in.vhd",
      sourceFormat: "vhd",
      target: "/i/out.qcow2",
      targetFormat: "qcow2",
    });
    expect(runner.commands).toEqual([["qemu-img", "convert", "-f", "vpc", "-O", "qcow2", "/i/in.vhd", "/i/out.qcow2"]]);
    expect(runner.runs[0]?.options?.timeoutMs).toBe(123);
  });

  it("reads an image a running guest holds only when asked to (-U)", async () => {
    const runner = new RecordingRunner().on(() => true, {});
    await new QemuImg({ runner }).convert({ source: "/p/disk.qcow2", sourceFormat: "qcow2", target: "/p/copy.qcow2", targetFormat: "qcow2", forceShare: true });
    expect(runner.commands).toEqual([["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", "/p/disk.qcow2", "/p/copy.qcow2"]]);
  });

  it("refuses an unknown source format before running anything", async () => {
    const runner = new RecordingRunner();
    await expect(
      new QemuImg({ runner }).convert({ source: "a", sourceFormat: "iso; rm", target: "b", targetFormat: "raw" }),
    ).rejects.toBeInstanceOf(UnsupportedImageFormatError);
    expect(runner.commands).toEqual([]);
    expect(qemuFormatName("VMDK")).toBe("vmdk");
  });

  it("creates overlays and blank images with the exact argv", async () => {
    const runner = new RecordingRunner().on(() => true, {});
    const tool = new QemuImg({ runner });
    await tool.createOverlay({ backing: "/i/base.raw", backingFormat: "raw", target: "/i/root.qcow2", sizeBytes: 21474836480 });
    await tool.create({ target: "/i/data.qcow2", format: "qcow2", sizeBytes: 1073741824 });
    expect(runner.commands).toEqual([
      ["qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/i/base.raw", "/i/root.qcow2", "21474836480"],
      ["qemu-img", "create", "-f", "qcow2", "/i/data.qcow2", "1073741824"],
    ]);
  });

  it("grows an image after checking its current size", async () => {
    const runner = new RecordingRunner()
      .on((a) => a[1] === "info", { stdout: JSON.stringify(qcow2Info("/i/d.qcow2", 1024 ** 3)) })
      .on((a) => a[1] === "resize", {});
    await new QemuImg({ runner }).resize({ target: "/i/d.qcow2", format: "qcow2", sizeBytes: 2 * 1024 ** 3 });
    expect(runner.commands.at(-1)).toEqual(["qemu-img", "resize", "-f", "qcow2", "/i/d.qcow2", "2147483648"]);
  });

  it("refuses a shrink with a typed error and never runs qemu-img resize", async () => {
    const runner = new RecordingRunner().on((a) => a[1] === "info", {
      stdout: JSON.stringify(qcow2Info("/i/d.qcow2", 2 * 1024 ** 3)),
    });
    const error = await new QemuImg({ runner })
      .resize({ target: "/i/d.qcow2", format: "qcow2", sizeBytes: 1024 ** 3 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImageShrinkError);
    expect(error).toMatchObject({ currentBytes: 2 * 1024 ** 3, requestedBytes: 1024 ** 3 });
    expect(runner.commands.map((c) => c[1])).toEqual(["info"]);
  });

  it("maps a missing file to ImageNotFoundError with the ExecError as cause", async () => {
    const runner = new RecordingRunner().on(() => true, {
      exitCode: 1,
      stderr: "qemu-img: Could not open '/i/x': Could not open '/i/x': No such file or directory\n",
    });
    const error = await new QemuImg({ runner }).info("/i/x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImageNotFoundError);
    expect((error as Error).cause).toBeInstanceOf(ExecError);
  });

  it("rejects sizes that are not positive whole numbers", async () => {
    const runner = new RecordingRunner();
    await expect(new QemuImg({ runner }).create({ target: "x", format: "raw", sizeBytes: 1.5 })).rejects.toBeInstanceOf(ImageToolError);
    expect(runner.commands).toEqual([]);
  });
});
