/** OsType and OsVersion: the documented families, an exact mapping, and the refusals. */
import { describe, expect, it } from "vitest";
import { osFamilyOf, OS_TYPES, storedOsFamily } from "../../../agent/os-family.js";
import { parse, refusal } from "../../support/parse.js";

const importBody = {
  Architecture: "x86_64",
  OsType: "Linux",
  OsVersion: "12",
  ImageUrl: "file:///var/lib/images/debian.qcow2",
  ImageName: "debian-12",
};
const isoBody = { InstanceId: "ins-abcd1234", ImageUrl: "file:///x.iso", Architecture: "x86_64", OsType: "CentOS", OsVersion: "7.2.1" };

describe("the OS family mapping", () => {
  it("maps every documented OsType to its family, ignoring case and surrounding blanks only", () => {
    for (const name of OS_TYPES.linux) expect([name, osFamilyOf(name)]).toEqual([name, "linux"]);
    for (const name of OS_TYPES.windows) expect([name, osFamilyOf(name)]).toEqual([name, "windows"]);
    expect(osFamilyOf(" windows server 2019 ")).toBe("windows");
    expect(osFamilyOf("UBUNTU")).toBe("linux");
  });

  it("takes nothing for Windows because it contains the word", () => {
    for (const name of ["NotWindows", "windowsish", "Linux (not Windows)", "Windows 95", "Win", "", "Linux2"]) {
      expect([name, osFamilyOf(name)]).toEqual([name, undefined]);
    }
  });
});

describe("the family of a stored image", () => {
  it("is the exact mapping for a listed name, and the old word rule only for names imported before the check", () => {
    expect(storedOsFamily("Windows Server 2016")).toBe("windows");
    expect(storedOsFamily("Debian")).toBe("linux");
    // Before the check, ImportImage kept any name; such images keep the family they had.
    expect(storedOsFamily("Windows 10 Pro")).toBe("windows");
    expect(storedOsFamily("Arch")).toBe("linux");
  });
});

describe.each([
  ["ImportImage", importBody],
  ["InstanceAttachISO", isoBody],
] as const)("%s", (action, body) => {
  it("accepts the documented OS types and release versions", () => {
    for (const [OsType, OsVersion] of [["Linux", "tiny"], ["Debian", "12"], ["Ubuntu", "22.04"], ["Windows Server 2012", "2012 R2"], ["centos", "7.2.1"]]) {
      expect(() => parse(action, { ...body, OsType, OsVersion })).not.toThrow();
    }
  });

  it.each(["FreeDOS", "Linux (not Windows)", "windowsish", "", "x".repeat(300)])("refuses OsType %j with InvalidImageOsType.Unsupported, naming the field", (OsType) => {
    const r = refusal(action, { ...body, OsType });
    expect(r.code).toBe("InvalidImageOsType.Unsupported");
    expect(r.message).toContain("OsType");
    expect(r.message.length).toBeLessThan(800);
  });

  it.each(["", " 12", "12 ", "7.2/../x", "a".repeat(33), "12;rm", "版本"])("refuses OsVersion %j with InvalidImageOsVersion.Unsupported", (OsVersion) => {
    const r = refusal(action, { ...body, OsVersion });
    expect(r.code).toBe("InvalidImageOsVersion.Unsupported");
    expect(r.message).toContain("OsVersion");
  });
});
