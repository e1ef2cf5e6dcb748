import { afterEach, describe, expect, it } from "vitest";
import { parseCommand } from "../../../agent/api/commands.js";
import { secrets } from "../../../drivers/exec/sanitize.js";
import { refusal } from "../../support/parse.js";

const IMPORT = { Architecture: "x86_64", OsType: "Debian", OsVersion: "12", ImageName: "x" };
const ATTACH = { InstanceId: "ins-abcd1234", Architecture: "x86_64", OsType: "Debian", OsVersion: "12" };

describe("URLs with credentials", () => {
  afterEach(() => secrets.clear());

  it.each([
    ["ImportImage", IMPORT, "http://user:s3cretPass@host/x.raw"],
    ["ImportImage", IMPORT, "https://tok3nOnly@host/x.raw#sha256=" + "a".repeat(64)],
    ["ImportImage", IMPORT, "http://:s3cretPass@host/x.raw"],
    ["ImportImage", IMPORT, "file://user:s3cretPass@localhost/srv/x.raw"],
    ["InstanceAttachISO", ATTACH, "http://user:s3cretPass@host/x.iso"],
    ["InstanceAttachISO", ATTACH, "https://user:s3cretPass@host/x.iso"],
  ])("%s refuses ImageUrl %s, naming the field and never repeating the URL", (action, base, url) => {
    const r = refusal(action, { ...base, ImageUrl: url });
    expect(r.code).toBe("InvalidParameter.InvalidParameterUrlError");
    expect(r.message).toContain("ImageUrl");
    expect(r.message).toMatch(/user name or password/);
    expect(r.message).not.toContain("s3cretPass");
    expect(r.message).not.toContain("tok3nOnly");
  });

  it("still takes URLs without credentials (an @ in the path is not one)", () => {
    expect(parseCommand("ImportImage", { ...IMPORT, ImageUrl: "http://host/x@1.raw" }).action).toBe("ImportImage");
    expect(parseCommand("InstanceAttachISO", { ...ATTACH, ImageUrl: "http://host/a.iso" }).action).toBe("InstanceAttachISO");
  });
});

describe("secrets in requests", () => {
  afterEach(() => secrets.clear());

  it("are registered with the sanitizer when the request is parsed, even when it is refused", () => {
    const userData = Buffer.from("#cloud-config\npassword: hunter2-in-userdata\n").toString("base64");
    refusal("RunInstances", { LoginSettings: { Password: "Passw0rd-Run!" }, UserData: userData, Bogus: 1 });
    refusal("ResetInstancesPassword", { InstanceIds: ["ins-abcd1234"], Password: "Passw0rd-Reset!", Bogus: 1 });
    refusal("EnterRescueMode", { InstanceId: "ins-abcd1234", Password: "Passw0rd-Rescue!", Bogus: 1 });
    for (const s of ["Passw0rd-Run!", "Passw0rd-Reset!", "Passw0rd-Rescue!", userData]) expect(secrets.has(s)).toBe(true);
    expect(secrets.sanitize("cloud-init said #cloud-config\npassword: hunter2-in-userdata\n")).not.toContain("hunter2");
  });
});
