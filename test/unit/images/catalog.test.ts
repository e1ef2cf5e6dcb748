import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ImageInspector, ImageTool } from "../../../drivers/storage/types.js";
import { parseCommand } from "../../../agent/api/commands.js";
import { createDispatcher, type DispatcherDeps } from "../../../agent/dispatch.js";
import { ApiError } from "../../../agent/errors.js";
import { ImageCatalog } from "../../../agent/images/catalog.js";
import type { ImageRecord } from "../../../agent/images/model.js";
import { DataPaths } from "../../../agent/paths.js";

/** An image tool that fails closed: these tests never convert, inspect or compare a disk. */
const noImageTool = new Proxy({} as ImageTool & ImageInspector, {
  get: (_t, name) => () => {
    throw new Error(`unexpected image tool call: ${String(name)}`);
  },
});

function failedRecord(imageId: string, imageName: string): ImageRecord {
  return {
    version: 2,
    imageId,
    imageName,
    imageDescription: "",
    osType: "Debian",
    osVersion: "12",
    architecture: "x86_64",
    bootMode: "Legacy BIOS",
    state: "IMPORTFAILED",
    createdTime: "2026-01-01T00:00:00Z",
    sourceUrl: "file:///nowhere.raw",
    origin: "IMPORT",
    errorCode: "InvalidUrl",
    errorMessage: "gone",
  };
}

let dir: string;
let paths: DataPaths;
let catalog: ImageCatalog;
let warnings: Array<Record<string, unknown>>;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "catalog-"));
  paths = new DataPaths(dir);
  warnings = [];
  const logger = pino({ level: "warn" }, { write: (line: string) => void warnings.push(JSON.parse(line) as Record<string, unknown>) });
  catalog = new ImageCatalog({ paths, imageTool: noImageTool, logger, maxImageBytes: 1024 ** 3, downloadTimeoutMs: 1000 });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ImageCatalog.load", () => {
  it("sets a record that is not JSON, fails its schema or names another image aside with a warning, and loads the rest", async () => {
    await mkdir(paths.imagesDir, { recursive: true });
    await writeFile(paths.imageRecord("img-good0001"), JSON.stringify(failedRecord("img-good0001", "good")));
    await writeFile(paths.imageRecord("img-trunc001"), '{"version": 2, "imageId": "img-tru');
    await writeFile(paths.imageRecord("img-bad00001"), JSON.stringify({ ...failedRecord("img-bad00001", "bad"), state: "MAYBE" }));
    await writeFile(paths.imageRecord("img-other001"), JSON.stringify(failedRecord("img-someone", "other")));
    await writeFile(paths.imageRecord("img-path0001"), JSON.stringify({ ...failedRecord("img-path0001", "p"), baseFile: "../../etc/shadow" }));

    await catalog.load();

    expect(catalog.list().map((r) => r.imageId)).toEqual(["img-good0001"]);
    const files = (await readdir(paths.imagesDir)).sort();
    for (const id of ["img-trunc001", "img-bad00001", "img-other001", "img-path0001"]) {
      expect(files).not.toContain(`${id}.json`);
      expect(files.filter((f) => f.startsWith(`${id}.json.bad-`))).toHaveLength(1);
    }
    const setAside = warnings.filter((w) => w.msg === "image record unreadable; set aside").map((w) => String(w.file)).sort();
    expect(setAside).toEqual(["img-bad00001", "img-other001", "img-path0001", "img-trunc001"].map((id) => paths.imageRecord(id)));
  });
});

describe("ImportImage and DryRun run the same checks", () => {
  let dispatch: ReturnType<typeof createDispatcher>;
  let readable: string;

  beforeEach(async () => {
    await mkdir(paths.imagesDir, { recursive: true });
    await writeFile(paths.imageRecord("img-taken001"), JSON.stringify({ ...failedRecord("img-taken001", "taken"), state: "CREATEFAILED" }));
    // A failed image does not hold its name; a NORMAL one does (its base must exist to stay NORMAL).
    await mkdir(join(paths.imagesDir, "base"), { recursive: true });
    await writeFile(join(paths.imagesDir, "base", "x-img-norm0001.qcow2"), "");
    await writeFile(
      paths.imageRecord("img-norm0001"),
      JSON.stringify({ ...failedRecord("img-norm0001", "in-use-name"), state: "NORMAL", baseFile: "base/x-img-norm0001.qcow2", virtualSizeBytes: 1024 ** 3 }),
    );
    await catalog.load();
    readable = join(dir, "disk.raw");
    await writeFile(readable, Buffer.alloc(512));
    dispatch = createDispatcher({ images: catalog, identity: { hostId: "host-abcd1234", zone: "zone-1" } } as unknown as DispatcherDeps);
  });

  async function refusal(body: Record<string, unknown>): Promise<string> {
    try {
      await dispatch(parseCommand("ImportImage", body), { requestId: "req-1", secretId: "AKID" });
    } catch (error) {
      if (error instanceof ApiError) return error.code;
      throw error;
    }
    throw new Error("ImportImage was accepted");
  }

  const base = { Architecture: "x86_64", OsType: "Debian", OsVersion: "12" };

  it.each([
    ["a name a NORMAL image has", { ImageName: "in-use-name", ImageUrl: "file:///dev/null" }, "InvalidImageName.Duplicate"],
    ["a file:// path that does not exist", { ImageName: "new", ImageUrl: "file:///no/such/disk.raw" }, "InvalidParameter.InvalidParameterUrlError"],
    ["a file:// path that is a directory", { ImageName: "new", ImageUrl: "file:///tmp" }, "InvalidParameter.InvalidParameterUrlError"],
  ])("refuses %s, with DryRun as without it", async (_what, fields, code) => {
    expect(await refusal({ ...base, ...fields, DryRun: true })).toBe(code);
    expect(await refusal({ ...base, ...fields })).toBe(code);
    expect(catalog.list().map((r) => r.imageId).sort()).toEqual(["img-norm0001", "img-taken001"]);
  });

  it("answers DryRunOperation for a request the real call takes, and records nothing", async () => {
    expect(await refusal({ ...base, ImageName: "taken", ImageUrl: `file://${readable}`, DryRun: true })).toBe("DryRunOperation");
    expect(catalog.list()).toHaveLength(2);
    expect(await readdir(paths.imagesDir)).not.toContain(expect.stringMatching(/^img-(?!taken001|norm0001).*\.json$/));
  });
});
