/**
 * Image and host actions: ImportImage, DescribeImages, DeleteImages
 * (reference/seeds-cvm-api.md §1.12) and DescribeHosts (§2.4 HostItem).
 */
import { z } from "zod";
import { osTypeField, osVersionField } from "./schemas-os.js";
import {
  boundedString,
  defaultProjectOnly,
  fail,
  filterList,
  idList,
  paging,
  parseWith,
  toFilters,
  toPaging,
  unique,
  unsupportedFields,
  type Filter,
  type Paging,
} from "./schemas.js";
import {
  CONFIG_DRIVE_FORMATS,
  CONFIG_DRIVE_TAG,
  imageUrlChecksum,
  parseImageSource,
  type ImageSource,
  type ImageTag,
} from "../images/source.js";

// The domain's image source and tags, as the schemas parse into them.
export { CONFIG_DRIVE_FORMATS, CONFIG_DRIVE_TAG, configDriveOf, imageUrlChecksum, parseImageSource, type ConfigDriveFormat, type ImageSource, type ImageTag } from "../images/source.js";

export interface ImportImageParams {
  architecture: "x86_64" | "arm_64";
  osType: string;
  osVersion: string;
  /** As sent. */
  imageUrl: string;
  /** The URL, checked: a local absolute path or an http(s) URL. */
  source: ImageSource;
  imageName: string;
  /** "" when absent. */
  imageDescription: string;
  dryRun: boolean;
  force: boolean;
  bootMode: "Legacy BIOS" | "UEFI";
  /** TagSpecification's image tags, in order; `cdh:config-drive` among them is checked. */
  tags: ImageTag[];
}

const tag = z
  .object({ Key: boundedString(127), Value: z.string().max(255, "is longer than 255 characters") })
  .strict()
  .superRefine((t, ctx) => {
    if (t.Key === CONFIG_DRIVE_TAG && !(CONFIG_DRIVE_FORMATS as readonly string[]).includes(t.Value)) {
      fail(ctx, "InvalidParameterValue", `must be one of ${CONFIG_DRIVE_FORMATS.join(", ")} for the tag ${CONFIG_DRIVE_TAG}`, ["Value"]);
    }
  });

const imageTagSpecification = z
  .array(
    z
      .object({
        ResourceType: z.string().superRefine((v, ctx) => {
          if (v !== "image") fail(ctx, "InvalidParameterValue", "must be image (ImportImage tags the image)");
        }),
        Tags: z.array(tag).max(50, "holds more than 50 tags"),
      })
      .strict(),
  )
  .max(1, "holds more than one specification")
  .superRefine((specs, ctx) => {
    const seen = new Set<string>();
    specs[0]?.Tags.forEach((t, i) => {
      if (seen.has(t.Key)) fail(ctx, "InvalidParameterValue", `repeats the tag key ${t.Key}`, [0, "Tags", i, "Key"]);
      seen.add(t.Key);
    });
  });

export const IMAGE_FILTER_NAMES = ["image-id", "image-name", "image-state", "image-type"] as const;
export type ImageFilterName = (typeof IMAGE_FILTER_NAMES)[number];

export interface DescribeImagesParams extends Paging {
  imageIds?: string[];
  filters: Filter<ImageFilterName>[];
}

export interface DeleteImagesParams {
  imageIds: string[];
  dryRun: boolean;
}

export const HOST_FILTER_NAMES = ["host-id", "zone", "host-name", "host-state"] as const;
export type HostFilterName = (typeof HOST_FILTER_NAMES)[number];

export interface DescribeHostsParams extends Paging {
  filters: Filter<HostFilterName>[];
}

/**
 * Whether a URL carries a user name or password (`scheme://user:password@host/…`). Such a URL
 * is refused where it enters, naming the field and never repeating the URL: its password would
 * otherwise be kept in records, shown in DescribeImages and written to logs.
 */
export function urlHasCredentials(raw: string): boolean {
  try {
    const url = new URL(raw);
    return url.username !== "" || url.password !== "";
  } catch {
    // Not a URL at all (refused for that); an authority with an "@" is still a credential.
    return /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(raw);
  }
}

/** The refusal of a URL with credentials; the message never repeats the URL. */
export const URL_CREDENTIALS_MESSAGE =
  "must not carry a user name or password (user:password@host): the agent would have to keep and show them; use a URL that needs none (a pre-signed URL, or file:///)";

const importImageSchema = z
  .object({
    Architecture: z.enum(["x86_64", "arm_64"]).superRefine((v, ctx) => {
      if (v !== "x86_64") fail(ctx, "InvalidParameterValue", "must be x86_64: the guests on this host are x86_64 machines, an arm_64 image would not boot");
    }),
    OsType: osTypeField,
    OsVersion: osVersionField,
    ImageUrl: z.string().superRefine((v, ctx) => {
      if (urlHasCredentials(v)) {
        fail(ctx, "InvalidParameter.InvalidParameterUrlError", URL_CREDENTIALS_MESSAGE);
      } else if (imageUrlChecksum(v) === null) {
        fail(ctx, "InvalidParameter.InvalidParameterUrlError", "may carry only one fragment, #sha256= followed by 64 hex digits (a `#` in a file name must be written %23)");
      } else if (!parseImageSource(v)) {
        fail(ctx, "InvalidParameter.InvalidParameterUrlError", "must be file:///absolute/path or an http:// or https:// URL");
      }
    }),
    ImageName: boundedString(60),
    ImageDescription: z
      .string()
      .superRefine((v, ctx) => {
        if ([...v].length > 256) fail(ctx, "InvalidParameterValue.TooLong", "is longer than 256 characters");
      })
      .optional(),
    DryRun: z.boolean().optional(),
    // The import's checks (format, partition table, boot mode) are never skipped: Force true is refused.
    Force: z
      .boolean()
      .superRefine((v, ctx) => {
        if (v) fail(ctx, "InvalidParameterValue", "cannot be true: the import's checks (format, partition table, boot mode) are not skipped on this host");
      })
      .optional(),
    BootMode: z.enum(["Legacy BIOS", "UEFI"]).optional(),
    TagSpecification: imageTagSpecification.optional(),
    ...unsupportedFields(["PublicImage", "LicenseType", "ImageFamily", "ImportImageDataDisk"]),
  })
  .strict();

export function parseImportImage(body: unknown): ImportImageParams {
  const r = parseWith(importImageSchema, body);
  return {
    architecture: r.Architecture,
    osType: r.OsType,
    osVersion: r.OsVersion,
    imageUrl: r.ImageUrl,
    source: parseImageSource(r.ImageUrl)!,
    imageName: r.ImageName,
    imageDescription: r.ImageDescription ?? "",
    dryRun: r.DryRun ?? false,
    force: r.Force ?? false,
    bootMode: r.BootMode ?? "Legacy BIOS",
    tags: (r.TagSpecification?.[0]?.Tags ?? []).map((t) => ({ key: t.Key, value: t.Value })),
  };
}

const describeImagesSchema = z
  .object({ ImageIds: idList("image").optional(), Filters: filterList(IMAGE_FILTER_NAMES).optional(), ...paging })
  .strict()
  .superRefine((v, ctx) => {
    if (v.ImageIds !== undefined && v.Filters !== undefined) {
      fail(ctx, "InvalidParameterCombination", "ImageIds and Filters cannot be given together");
    }
  });

export function parseDescribeImages(body: unknown): DescribeImagesParams {
  const r = parseWith(describeImagesSchema, body);
  const params: DescribeImagesParams = { ...toPaging(r), filters: toFilters<ImageFilterName>(r.Filters) };
  if (r.ImageIds) params.imageIds = unique(r.ImageIds);
  return params;
}

const deleteImagesSchema = z.object({ ImageIds: idList("image"), DryRun: z.boolean().optional() }).strict();

export function parseDeleteImages(body: unknown): DeleteImagesParams {
  const r = parseWith(deleteImagesSchema, body);
  return { imageIds: unique(r.ImageIds), dryRun: r.DryRun ?? false };
}

const describeHostsSchema = z.object({ Filters: filterList(HOST_FILTER_NAMES).optional(), ...paging }).strict();

export function parseDescribeHosts(body: unknown): DescribeHostsParams {
  const r = parseWith(describeHostsSchema, body);
  return { ...toPaging(r), filters: toFilters<HostFilterName>(r.Filters) };
}

/**
 * ModifyHostsAttribute (reference/tencent-api-next.md §C.8): HostIds (this host's only) and
 * HostName, kept across restarts. ProjectId may only restate the host's one project, 0.
 * RenewFlag is the host's billing renewal, which a host agent has not: refused naming it.
 */
export interface ModifyHostsAttributeParams {
  hostIds: string[];
  hostName?: string;
}

const modifyHostsAttributeSchema = z
  .object({
    HostIds: idList("host"),
    HostName: boundedString(60).optional(),
    ProjectId: defaultProjectOnly().optional(),
    ...unsupportedFields(["RenewFlag"]),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.HostName === undefined && v.ProjectId === undefined) fail(ctx, "MissingParameter", "names no attribute to change: give HostName", ["HostName"]);
  });

export function parseModifyHostsAttribute(body: unknown): ModifyHostsAttributeParams {
  const r = parseWith(modifyHostsAttributeSchema, body);
  return { hostIds: unique(r.HostIds), ...(r.HostName !== undefined ? { hostName: r.HostName } : {}) };
}

/** The request schemas of this file's actions, by action (test/unit/api/fields.test.ts walks every field). */
export const IMAGE_REQUEST_SCHEMAS = {
  ImportImage: importImageSchema,
  DescribeImages: describeImagesSchema,
  DeleteImages: deleteImagesSchema,
  DescribeHosts: describeHostsSchema,
  ModifyHostsAttribute: modifyHostsAttributeSchema,
} as const;
