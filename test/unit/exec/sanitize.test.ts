import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../../agent/log.js";
import { ExecError } from "../../../drivers/exec/runner.js";
import { addSecret, REDACTED, Sanitizer, secrets } from "../../../drivers/exec/sanitize.js";
import { captureLines as capture } from "../../support/log-capture.js";

const PASSWORD = "Tr0ub4dor&3-horse";


describe("Sanitizer", () => {
  it("replaces every occurrence of a registered secret", () => {
    const s = new Sanitizer();
    s.add(PASSWORD);
    expect(s.sanitize(`a ${PASSWORD} b ${PASSWORD}`)).toBe(`a ${REDACTED} b ${REDACTED}`);
    expect(s.sanitize(PASSWORD)).toBe(REDACTED);
  });

  it("leaves a text without secrets unchanged (the same string)", () => {
    const s = new Sanitizer();
    s.add(PASSWORD);
    const text = "virsh -c qemu:///system start --domain ins-abcd1234";
    expect(s.sanitize(text)).toBe(text);
  });

  it("scrubs the JSON-escaped, base64 and percent-encoded forms of a secret", () => {
    const s = new Sanitizer();
    const secret = 'pa"ss\\word 42';
    s.add(secret);
    const json = JSON.stringify({ msg: `failed: ${secret}` });
    expect(json).not.toContain(secret);
    expect(s.sanitize(json)).not.toContain(JSON.stringify(secret).slice(1, -1));
    expect(JSON.parse(s.sanitize(json))).toEqual({ msg: `failed: ${REDACTED}` });
    const b64 = Buffer.from(secret).toString("base64");
    expect(s.sanitize(`{"password":"${b64}"}`)).toBe(`{"password":"${REDACTED}"}`);
    expect(s.sanitize(`https://h/?p=${encodeURIComponent(secret)}`)).toBe(`https://h/?p=${REDACTED}`);
  });

  it("keeps a JSON line valid when a secret ends in a backslash", () => {
    const s = new Sanitizer();
    const secret = "endswith\\";
    s.add(secret);
    const line = JSON.stringify({ a: `x${secret}`, b: 1 });
    expect(JSON.parse(s.sanitize(line))).toEqual({ a: `x${REDACTED}`, b: 1 });
  });

  it("ignores empty, missing and short texts", () => {
    const s = new Sanitizer({ minLength: 6 });
    s.add(undefined);
    s.add(null);
    s.add("");
    s.add("root");
    s.add("12345");
    expect(s.size).toBe(0);
    expect(s.sanitize("root 12345")).toBe("root 12345");
  });

  it("scrubs the longer of two secrets that start at the same place whole", () => {
    const s = new Sanitizer();
    s.add("abcdefgh");
    s.add("abcdefghijkl");
    expect(s.sanitize("<abcdefghijkl>")).toBe(`<${REDACTED}>`);
    expect(s.sanitize("<abcdefgh>")).toBe(`<${REDACTED}>`);
  });

  it("forgets the secrets registered longest ago when it holds more than maxSecrets", () => {
    const s = new Sanitizer({ maxSecrets: 2 });
    s.add("first-secret");
    s.add("second-secret");
    s.add("first-secret"); // registered again: now the newest
    s.add("third-secret");
    expect(s.size).toBe(2);
    expect(s.has("second-secret")).toBe(false);
    expect(s.sanitize("first-secret second-secret third-secret")).toBe(`${REDACTED} second-secret ${REDACTED}`);
  });

  it("forgets old secrets when their forms exceed maxChars, and never keeps one larger than that", () => {
    const s = new Sanitizer({ maxChars: 250 }); // each secret below has two forms, 140 characters in all
    s.add("a".repeat(60));
    s.add("b".repeat(60));
    expect(s.size).toBe(1);
    expect(s.has("b".repeat(60))).toBe(true);
    s.add("c".repeat(1000));
    expect(s.has("c".repeat(1000))).toBe(false);
    expect(s.sanitize("b".repeat(60))).toBe(REDACTED);
  });

  it("scrubs the user and password of any URL, registered or not", () => {
    const s = new Sanitizer();
    expect(s.sanitize("download of http://user:secret@host/x.raw failed")).toBe(`download of http://${REDACTED}@host/x.raw failed`);
    expect(s.sanitize('{"url":"https://tok3n@example.com/a"}')).toBe(`{"url":"https://${REDACTED}@example.com/a"}`);
    expect(s.sanitize("mail me at someone@example.com")).toBe("mail me at someone@example.com");
    expect(s.sanitize("http://host/path@v1")).toBe("http://host/path@v1");
  });

  it("scrubs PEM private keys, raw or inside a JSON line", () => {
    const s = new Sanitizer();
    const pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----";
    expect(s.sanitize(`key: ${pem} done`)).toBe(`key: ${REDACTED} done`);
    expect(JSON.parse(s.sanitize(JSON.stringify({ k: pem })))).toEqual({ k: REDACTED });
    expect(s.sanitize("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")).toContain("AAAA");
  });

  it("scrubs a thousand secrets from a line in one pass (well under a millisecond each)", () => {
    const s = new Sanitizer();
    for (let i = 0; i < 1000; i++) s.add(`secret-number-${i}-xyz`);
    const line = JSON.stringify({ msg: "command failed", stderr: "x".repeat(400), arg: "secret-number-777-xyz" });
    const started = performance.now();
    let out = "";
    for (let i = 0; i < 1000; i++) out = s.sanitize(line);
    const perLineMs = (performance.now() - started) / 1000;
    expect(out).not.toContain("secret-number-777-xyz");
    expect(perLineMs).toBeLessThan(1);
  });
});

describe("the agent's registry", () => {
  afterEach(() => secrets.clear());

  it("cleans an ExecError's message, argv, stdout and stderr", () => {
    addSecret(PASSWORD);
    const error = new ExecError({
      command: ["virsh", "qemu-agent-command", `{"password":"${PASSWORD}"}`],
      exitCode: 1,
      stdout: `echo ${PASSWORD}`,
      stderr: `error: bad ${PASSWORD}`,
      failure: "exit",
      cause: new Error(`Command failed: virsh ${PASSWORD}`),
    });
    for (const text of [error.message, ...error.command, error.stdout, error.stderr, (error.cause as Error).message]) {
      expect(text).not.toContain(PASSWORD);
    }
    expect(error.message).toContain(REDACTED);
    expect(error.command[2]).toBe(`{"password":"${REDACTED}"}`);
  });

  it("cleans every log line, whatever field or message holds the secret", () => {
    addSecret(PASSWORD);
    const out = capture();
    const log = createLogger({ level: "debug", destination: out.destination });
    log.info({ command: `virsh metadata --set ${PASSWORD}` }, "command failed");
    log.warn({ err: new Error(`it said ${PASSWORD}`) }, `message ${PASSWORD}`);
    log.child({ component: "x" }).debug({ deep: { deeper: { deepest: [PASSWORD] } } }, "nested");
    expect(out.lines).toHaveLength(3);
    for (const line of out.lines) {
      expect(line).not.toContain(PASSWORD);
      expect(line).toContain(REDACTED);
      expect(() => JSON.parse(line)).not.toThrow();
    }
  });
});
