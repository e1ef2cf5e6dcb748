import { describe, expect, it } from "vitest";
import { LocalRunner } from "../../../drivers/exec/local.js";
import {
  hostKeyFingerprintOf,
  normalizeFingerprint,
  shellQuote,
  toRemoteCommand,
} from "../../../drivers/exec/ssh.js";
import { PID_HEADER_COMMAND, PidHeader } from "../../../drivers/exec/remote-command.js";

const awkward = [
  "plain",
  "two words",
  "",
  "it's",
  "'",
  "''",
  'double "quotes"',
  "$HOME and ${PATH}",
  "`id` and $(id)",
  "line one\nline two\n",
  "back\\slash",
  "*?[a-z]~",
  "semi; colon && pipe | amp &",
  "tab\there",
  "-n",
  "ünïcödé ✓",
];

describe("shellQuote", () => {
  it("wraps a value in single quotes", () => {
    expect(shellQuote("abc")).toBe("'abc'");
  });

  it("turns an empty string into an empty quoted word", () => {
    expect(shellQuote("")).toBe("''");
  });

  it("closes, escapes and reopens around a single quote", () => {
    expect(shellQuote("it's")).toBe("'it'\\''s'");
  });
});

describe("toRemoteCommand", () => {
  it("execs the quoted argv", () => {
    expect(toRemoteCommand(["virsh", "list", "--all"])).toBe("exec 'virsh' 'list' '--all'");
  });

  it("prefixes cwd and env", () => {
    expect(toRemoteCommand(["ls"], { cwd: "/tmp/a b", env: { LANG: "C", X: "it's" } })).toBe(
      "cd '/tmp/a b' && exec env 'LANG=C' 'X=it'\\''s' 'ls'",
    );
  });

  it("refuses an environment variable name that is not a name", () => {
    expect(() => toRemoteCommand(["ls"], { env: { "A;B": "1" } })).toThrow(/invalid environment variable name/);
  });

  it("refuses an empty argv", () => {
    expect(() => toRemoteCommand([])).toThrow(TypeError);
  });

  for (const shell of ["/bin/sh", "/bin/bash"]) {
    it(`delivers awkward arguments unchanged through ${shell} -c`, async () => {
      const runner = new LocalRunner();
      const line = toRemoteCommand(["printf", "%s\\0", ...awkward]);
      const result = await runner.run([shell, "-c", line]);
      expect(result.stdout.split("\0").slice(0, -1)).toEqual(awkward);
    });
  }

  it("delivers env values unchanged through /bin/sh -c", async () => {
    const runner = new LocalRunner();
    const value = "a 'b' \"c\" $d `e`\nf";
    const line = toRemoteCommand(["printenv", "WEIRD"], { env: { WEIRD: value } });
    const result = await runner.run(["/bin/sh", "-c", line]);
    expect(result.stdout).toBe(`${value}\n`);
  });
});

describe("host key fingerprints", () => {
  it("treats the SHA256: prefix and base64 padding as the same fingerprint", () => {
    expect(normalizeFingerprint("SHA256:abcd=")).toBe("abcd");
    expect(normalizeFingerprint("abcd")).toBe("abcd");
  });

  it("hashes a key blob with SHA-256 in unpadded base64", () => {
    expect(hostKeyFingerprintOf(Buffer.from(""))).toBe("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
  });
});

describe("PidHeader", () => {
  it("takes the PID line off the front of stderr, even split across chunks", () => {
    const header = new PidHeader();
    expect(header.take(Buffer.from("@cdh-agent-pid:12")).length).toBe(0);
    expect(header.take(Buffer.from("34\nreal err")).toString()).toBe("real err");
    expect(header.take(Buffer.from("or\n")).toString()).toBe("or\n");
    expect(header.pid).toBe(1234);
  });

  it("passes stderr through untouched when the first line is not a PID line", () => {
    const header = new PidHeader();
    expect(header.take(Buffer.from("something else\nmore")).toString()).toBe("something else\nmore");
    expect(header.pid).toBeNull();
  });

  it("returns a partial first line on flush", () => {
    const header = new PidHeader();
    header.take(Buffer.from("no newline"));
    expect(header.flush().toString()).toBe("no newline");
  });

  it("is what the shell prints for PID_HEADER_COMMAND", async () => {
    const result = await new LocalRunner().run(["/bin/sh", "-c", `${PID_HEADER_COMMAND}exec sh -c 'echo $$'`]);
    const header = new PidHeader();
    expect(header.take(Buffer.from(result.stderr)).length).toBe(0);
    expect(header.pid).toBe(Number(result.stdout.trim()));
  });
});
