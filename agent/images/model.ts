/**
 * The image model: the record kept per image (img-xxxxxxxx.json under the images
 * directory), its states, and the import failures DescribeImages shows.
 */
import type { OsFamily } from "../os-family.js";
import { z } from "zod";
import type { ConfigDriveFormat, ImageTag } from "./source.js";

export type ImageState = "IMPORTING" | "NORMAL" | "IMPORTFAILED" | "CREATING" | "CREATEFAILED";
export type ImageOrigin = "IMPORT" | "CREATE_IMAGE";

/**
 * Why an import failed, shown in DescribeImages as ErrorCode: the import error codes of
 * the seed (reference/seeds-cvm-manual-1.md §8.1, "Error codes").
 */
export const IMPORT_ERROR_CODES = Object.freeze({
  InvalidUrl: "The file at ImageUrl cannot be read, or its SHA-256 differs from the #sha256= the URL names.",
  InvalidFormatSize:
    "The file is not a qcow2, raw, vmdk or vhd image; it is damaged or truncated; it has a backing file; or its size is over max_image_bytes or cannot be represented.",
  PartitionNotPresent: "The disk holds no MBR or GPT partition table and is not a bare ext3, ext4 or NTFS filesystem.",
  InternalError: "The host failed during the import (e.g. the agent stopped, the disk is full).",
} as const);
export type ImportErrorCode = keyof typeof IMPORT_ERROR_CODES;

export interface ImageRecord {
  version: 1 | 2;
  imageId: string;
  imageName: string;
  imageDescription: string;
  osType: string;
  osVersion: string;
  architecture: string;
  bootMode: "Legacy BIOS" | "UEFI";
  state: ImageState;
  createdTime: string;
  sourceUrl: string;
  /** IMPORT when absent (records made before CreateImage existed). */
  origin?: ImageOrigin;
  sourceFormat?: string;
  virtualSizeBytes?: number;
  actualSizeBytes?: number;
  /** The base file, relative to the images directory (absent until the image is NORMAL). */
  baseFile?: string;
  /** SHA-256 of the imported file's bytes (only when the URL named one to check). */
  contentSha256?: string;
  /** SHA-256 of the first 128 KiB the guest sees and the virtual size: finds candidates for sharing a base. */
  contentKey?: string;
  /** Progress of a running import, 0–100. */
  progressPercent?: number;
  errorCode?: ImportErrorCode;
  errorMessage?: string;
  /** ImportImage's TagSpecification tags (image properties such as cdh:config-drive). */
  tags?: ImageTag[];
}

export interface UsableImage {
  imageId: string;
  /** The base file overlays back onto. */
  path: string;
  virtualSizeBytes: number;
  osName: string;
  /** The image's OS family (agent/os-family.ts). */
  osFamily: OsFamily;
  bootMode: "Legacy BIOS" | "UEFI";
  /** The config drive the image's tags ask for. */
  configDrive: ConfigDriveFormat;
}

export interface ImportImageRequest {
  /** file:///path or http(s)://…, optionally with #sha256=<64 hex digits>. */
  ImageUrl: string;
  ImageName: string;
  ImageDescription?: string;
  OsType: string;
  OsVersion: string;
  Architecture: string;
  BootMode?: "Legacy BIOS" | "UEFI";
  Tags?: ImageTag[];
}

/** What an image made from an instance is (beginImage). */
export interface NewImageMeta {
  imageName: string;
  imageDescription?: string;
  osType: string;
  osVersion: string;
  architecture: string;
  bootMode: "Legacy BIOS" | "UEFI";
  source: "CREATE_IMAGE";
  tags?: ImageTag[];
}

/** An import refused for a reason the seed names. */
export class ImportFailure extends Error {
  override name = "ImportFailure";
  constructor(
    readonly code: ImportErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** An image record as read from disk: checked where it is loaded (a bad one is set aside, never trusted). */
export const imageRecordSchema = z
  .object({
    version: z.union([z.literal(1), z.literal(2)]),
    imageId: z.string().regex(/^img-[a-z0-9]{8}$/),
    imageName: z.string(),
    imageDescription: z.string(),
    osType: z.string(),
    osVersion: z.string(),
    architecture: z.string(),
    bootMode: z.enum(["Legacy BIOS", "UEFI"]),
    state: z.enum(["IMPORTING", "NORMAL", "IMPORTFAILED", "CREATING", "CREATEFAILED"]),
    createdTime: z.string(),
    sourceUrl: z.string(),
    origin: z.enum(["IMPORT", "CREATE_IMAGE"]).optional(),
    sourceFormat: z.string().optional(),
    virtualSizeBytes: z.number().int().nonnegative().optional(),
    actualSizeBytes: z.number().int().nonnegative().optional(),
    baseFile: z
      .string()
      .regex(/^(base\/)?[A-Za-z0-9._-]+\.qcow2$/, "must name a file in the image cache")
      .optional(),
    contentSha256: z.string().optional(),
    contentKey: z.string().optional(),
    progressPercent: z.number().optional(),
    errorCode: z.enum(["InvalidUrl", "InvalidFormatSize", "PartitionNotPresent", "InternalError"]).optional(),
    errorMessage: z.string().optional(),
    tags: z.array(z.object({ key: z.string(), value: z.string() })).optional(),
  })
  .passthrough();

/** A record file's content → the record, or why it cannot be one. */
export function parseImageRecord(json: string): { ok: true; record: ImageRecord } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    return { ok: false, error: `not JSON: ${(error as Error).message}` };
  }
  const parsed = imageRecordSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, error: parsed.error.issues.map((i) => `${i.path.join(".") || "(record)"}: ${i.message}`).join("; ") };
  return { ok: true, record: parsed.data as ImageRecord };
}
