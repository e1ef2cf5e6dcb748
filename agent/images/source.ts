/**
 * Where an image comes from (ImageUrl, parsed) and the image properties carried as tags.
 * Domain types: the API schemas (agent/api/schemas-images.ts) parse into them.
 */
import { fileURLToPath } from "node:url";
import { DomainError } from "../core/errors.js";

/**
 * Where an image comes from. `sha256` is the checksum the URL carries in its fragment
 * (`…#sha256=<64 hex digits>`): the CVM ImportImage has no checksum field, and a
 * fragment never reaches an HTTP server, so the checksum travels with the URL itself.
 */
export type ImageSource = ({ kind: "file"; path: string } | { kind: "http"; href: string }) & { sha256?: string };

export interface ImageTag {
  key: string;
  value: string;
}

/**
 * The image property that picks the guest's config drive: `config-2` (OpenStack layout,
 * the default), `nocloud` (a `cidata` NoCloud seed, for images whose cloud-init looks
 * only for that) or `none` (no drive: the guest configures itself by DHCP and the metadata
 * endpoint alone, README "DHCP"). CVM has no such field; an image tag is where CVM images
 * carry their own properties, as Glance image properties do in OpenStack.
 */
export const CONFIG_DRIVE_TAG = "cdh:config-drive";
export const CONFIG_DRIVE_FORMATS = ["config-2", "nocloud", "none"] as const;
export type ConfigDriveFormat = (typeof CONFIG_DRIVE_FORMATS)[number];

/** The config drive an image's tags ask for. */
export function configDriveOf(tags: readonly ImageTag[] | undefined): ConfigDriveFormat {
  const value = tags?.find((t) => t.key === CONFIG_DRIVE_TAG)?.value;
  return value === "nocloud" || value === "none" ? value : "config-2";
}

/** The tags that give an image the config drive `format` (none for the default). */
export function configDriveTags(format: ConfigDriveFormat | undefined): ImageTag[] {
  return format === "nocloud" || format === "none" ? [{ key: CONFIG_DRIVE_TAG, value: format }] : [];
}

/** The checksum fragment: "" (none) or "#sha256=" and 64 hex digits. */
const CHECKSUM_FRAGMENT = /^#sha256=([0-9a-fA-F]{64})$/;

/** The SHA-256 an ImageUrl's fragment names (lower case), undefined without one, null when the fragment is not a checksum. */
export function imageUrlChecksum(raw: string): string | undefined | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.hash === "") return undefined;
  const m = CHECKSUM_FRAGMENT.exec(url.hash);
  return m ? m[1]!.toLowerCase() : null;
}

/** file:///absolute/path (host empty or localhost) or http(s)://host/…; else undefined. */
export function parseImageSource(raw: string): ImageSource | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  const sha256 = imageUrlChecksum(raw);
  if (sha256 === null) return undefined;
  const checksum = sha256 === undefined ? {} : { sha256 };
  url.hash = "";
  if (url.protocol === "file:") {
    if (url.host !== "" && url.host !== "localhost") return undefined;
    if (!raw.toLowerCase().startsWith("file:///") && !raw.toLowerCase().startsWith("file://localhost/")) return undefined;
    try {
      const path = fileURLToPath(url);
      return path.startsWith("/") && path !== "/" ? { kind: "file", path, ...checksum } : undefined;
    } catch {
      return undefined;
    }
  }
  if ((url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "") return { kind: "http", href: url.href, ...checksum };
  return undefined;
}

/** ImageUrl → where to read it (the checksum fragment included); the CVM error when it is unusable. */
export function parseImageUrl(raw: string): ImageSource {
  const source = parseImageSource(raw);
  if (!source) {
    throw new DomainError("BadUrl",
      `ImageUrl ${JSON.stringify(raw)} must be file:///absolute/path or an http(s):// URL, optionally ending in #sha256=<64 hex digits>`,
    );
  }
  return source;
}
