import { describe, expect, it } from "vitest";
import { createLogger, rateLimited, REDACTED } from "../../agent/log.js";
import { captureLines as capture } from "../support/log-capture.js";

const SECRET = "s3cr3t-VALUE-that-must-not-leak";


describe("createLogger", () => {
  it("writes JSON lines with a level label, a time and the message", () => {
    const out = capture();
    const log = createLogger({ level: "info", destination: out.destination });
    log.info({ instanceId: "ins-abcd1234" }, "instance started");
    log.debug("hidden at info");
    const [rec] = out.records();
    expect(out.lines).toHaveLength(1);
    expect(rec).toMatchObject({ level: "info", msg: "instance started", instanceId: "ins-abcd1234" });
    expect(typeof rec!.time).toBe("string");
  });

  it.each([
    ["password", { password: SECRET }],
    ["Password", { Password: SECRET }],
    ["nested password", { login: { password: SECRET } }],
    ["nested Password (LoginSettings)", { LoginSettings: { Password: SECRET } }],
    ["secret_key", { secret_key: SECRET }],
    ["SecretKey", { SecretKey: SECRET }],
    ["nested secret_key", { credential: { secret_key: SECRET } }],
    ["nested SecretKey", { credential: { SecretKey: SECRET } }],
    ["privateKey", { privateKey: SECRET }],
    ["PrivateKey", { PrivateKey: SECRET }],
    ["nested privateKey", { ssh: { privateKey: SECRET } }],
    ["UserData", { UserData: SECRET }],
    ["nested UserData", { request: { UserData: SECRET } }],
    ["userData", { userData: SECRET }],
    ["nested userData", { doc: { userData: SECRET } }],
    ["authorization", { authorization: SECRET }],
    ["nested authorization", { headers: { authorization: SECRET } }],
    ["nested Authorization", { headers: { Authorization: SECRET } }],
    ["request headers authorization", { req: { headers: { authorization: SECRET } } }],
  ])("never writes a secret logged as %s", (_name, fields) => {
    const out = capture();
    const log = createLogger({ level: "trace", destination: out.destination });
    log.info(fields, "something happened");
    log.child({ component: "api" }).warn(fields, "again from a child");
    expect(out.lines).toHaveLength(2);
    for (const line of out.lines) {
      expect(line).not.toContain(SECRET);
      expect(line).toContain(REDACTED);
    }
  });

  it("keeps fields that are not secrets", () => {
    const out = capture();
    const log = createLogger({ level: "info", destination: out.destination });
    log.info({ secretId: "AKID1", InstanceName: "web" }, "ok");
    expect(out.records()[0]).toMatchObject({ secretId: "AKID1", InstanceName: "web" });
  });
});

describe("rateLimited", () => {
  it("passes perMinute lines, drops the rest, and reports the dropped count on the next line", () => {
    const out = capture();
    let now = 0;
    const limited = rateLimited(createLogger({ level: "info", destination: out.destination }), {
      perMinute: 3,
      now: () => now,
    });
    for (let i = 0; i < 10; i++) limited.warn({ i }, "guest sent garbage");
    expect(out.lines).toHaveLength(3);
    expect(limited.suppressed).toBe(7);

    now += 20_000; // one token refilled (3 per 60 s)
    limited.warn({ i: 10 }, "guest sent garbage");
    limited.warn({ i: 11 }, "guest sent garbage");
    const recs = out.records();
    expect(recs).toHaveLength(4);
    expect(recs[3]).toMatchObject({ i: 10, suppressed: 7 });
    expect(limited.suppressed).toBe(1);
  });

  it("does not spend the budget on lines below the logger's level", () => {
    const out = capture();
    const limited = rateLimited(createLogger({ level: "warn", destination: out.destination }), {
      perMinute: 1,
      now: () => 0,
    });
    limited.debug({}, "not written");
    limited.error({}, "written");
    expect(out.records()).toMatchObject([{ msg: "written" }]);
  });
});
