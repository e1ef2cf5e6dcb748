/**
 * The OS families the agent knows, and the one exact mapping from an image's OsType
 * to its family (README, "Images: OsType and OsVersion"). The family decides the
 * login account (root / Administrator), the password rule and whether cloud-init
 * configures the guest. ImportImage and InstanceAttachISO refuse any other OsType with
 * InvalidImageOsType.Unsupported, so every stored image maps exactly; before, any
 * OsType was accepted and one containing "windows" anywhere was taken for Windows.
 *
 * The names are those of DescribeImportImageOs (reference/seeds-cvm-api.md:
 * `linux: ["CentOS", …]`, `windows: ["Windows Server 2016", …]`) and of the
 * distributions the CDH FAQ lists (CentOS, Redhat, Ubuntu, Debian, CoreOS, OpenSUSE,
 * SUSE), plus the generic `Linux` and `Windows`. Matching ignores case and
 * surrounding blanks, nothing else.
 */

export type OsFamily = "linux" | "windows";

export const OS_TYPES: Readonly<Record<OsFamily, readonly string[]>> = Object.freeze({
  linux: Object.freeze([
    "Linux",
    "CentOS",
    "RedHat",
    "Ubuntu",
    "Debian",
    "CoreOS",
    "OpenSUSE",
    "SUSE",
    "TencentOS",
    "OpenCloudOS",
    "Rocky",
    "AlmaLinux",
    "Fedora",
  ]),
  windows: Object.freeze(["Windows", "Windows Server 2012", "Windows Server 2016", "Windows Server 2019", "Windows Server 2022"]),
});

const FAMILY_OF = new Map<string, OsFamily>(
  (Object.entries(OS_TYPES) as Array<[OsFamily, readonly string[]]>).flatMap(([family, names]) =>
    names.map((name) => [name.toLowerCase(), family] as const),
  ),
);

/** The family of an OsType from the list above; undefined for any other OsType. */
export function osFamilyOf(osType: string): OsFamily | undefined {
  return FAMILY_OF.get(osType.trim().toLowerCase());
}

/**
 * The family of an image already stored: the exact mapping for the names above; for a
 * name outside them (only images imported before ImportImage checked OsType) the old
 * rule, "windows" anywhere in the name, so that such images do not change family.
 */
export function storedOsFamily(osType: string): OsFamily {
  return osFamilyOf(osType) ?? (/windows/i.test(osType) ? "windows" : "linux");
}

/**
 * An OsVersion is a release name or number: 1–32 letters, digits, `.`, `_`, `-` or
 * blanks, starting with a letter or digit (`7.2.1`, `12`, `22.04`, `2012 R2`, `bookworm`).
 */
export const OS_VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._ -]{0,31}$/;

export function osVersionOk(osVersion: string): boolean {
  return OS_VERSION_RE.test(osVersion) && osVersion.trimEnd() === osVersion;
}
