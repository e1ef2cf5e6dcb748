/** The operator commands' argument parsing: every command, its options, and the usage errors (exit 2). */
import { describe, expect, it } from "vitest";
import { commandName, defaultImageName, EXIT, importUrl, parseOperatorArgs, UsageError } from "../../../agent/cli/args.js";

const parse = (...argv: string[]) => parseOperatorArgs(argv, "/home/op");
const usage = (...argv: string[]) => expect(() => parse(...argv)).toThrow(UsageError);

describe("parseOperatorArgs", () => {
  it("parses the listing commands with --json and --config", () => {
    expect(parse("instances")).toEqual({ command: { kind: "instances" }, json: false });
    expect(parse("images", "--json")).toEqual({ command: { kind: "images" }, json: true });
    expect(parse("--config", "/etc/x.json", "host")).toEqual({ command: { kind: "host" }, json: false, config: "/etc/x.json" });
    expect(parse("instance", "ins-abcd1234", "-c", "f")).toEqual({ command: { kind: "instance", id: "ins-abcd1234" }, json: false, config: "f" });
  });

  it("parses the power commands with their options, removing repeated IDs", () => {
    expect(parse("stop", "ins-aaaaaaaa", "ins-bbbbbbbb", "ins-aaaaaaaa", "--hard", "--wait", "--timeout", "30").command).toEqual({
      kind: "power",
      action: "stop",
      ids: ["ins-aaaaaaaa", "ins-bbbbbbbb"],
      hard: true,
      wait: true,
      timeoutS: 30,
    });
    expect(parse("start", "ins-aaaaaaaa").command).toEqual({ kind: "power", action: "start", ids: ["ins-aaaaaaaa"], hard: false, wait: false, timeoutS: 300 });
    expect(parse("terminate", "ins-aaaaaaaa").command).toMatchObject({ action: "terminate" });
    expect(parse("reboot", "ins-aaaaaaaa", "--hard").command).toMatchObject({ action: "reboot", hard: true });
  });

  it("parses import: a relative FILE becomes a file:// URL, a URL stays, defaults for name and OS", () => {
    expect(parse("import", "img/tiny.qcow2").command).toEqual({
      kind: "import",
      imageUrl: "file:///home/op/img/tiny.qcow2",
      imageName: "tiny",
      osType: "Linux",
      osVersion: "unknown",
      wait: true,
      timeoutS: 600,
    });
    expect(parse("import", "https://example.test/a/debian-12.raw.xz", "--name", "deb", "--os-version", "12", "--no-wait", "--timeout", "5").command).toEqual({
      kind: "import",
      imageUrl: "https://example.test/a/debian-12.raw.xz",
      imageName: "deb",
      osType: "Linux",
      osVersion: "12",
      wait: false,
      timeoutS: 5,
    });
  });

  it("parses logs with --tail and -f", () => {
    expect(parse("logs", "ins-abcd1234", "--tail", "20").command).toEqual({ kind: "logs", id: "ins-abcd1234", tail: 20, follow: false });
    expect(parse("logs", "ins-abcd1234").command).toEqual({ kind: "logs", id: "ins-abcd1234", follow: false });
    expect(parse("logs", "-f", "ins-abcd1234").command).toEqual({ kind: "logs", id: "ins-abcd1234", follow: true });
    expect(parse("logs", "ins-abcd1234", "--follow", "--tail", "5").command).toEqual({ kind: "logs", id: "ins-abcd1234", tail: 5, follow: true });
    usage("logs", "ins-abcd1234", "-f", "--json"); // a stream of text is not one JSON document
  });

  it("parses console", () => {
    expect(parse("console", "ins-abcd1234")).toEqual({ command: { kind: "console", id: "ins-abcd1234" }, json: false });
    usage("console"); // no ID
    usage("console", "ins-abcd1234", "--json");
    usage("console", "ins-abcd1234", "--tail", "3");
  });

  it("parses top", () => {
    expect(parse("top").command).toEqual({ kind: "top", intervalS: 10 });
    expect(parse("top", "--interval", "2", "--count", "3").command).toEqual({ kind: "top", intervalS: 2, count: 3 });
    usage("top", "ins-abcd1234");
    usage("top", "--count", "0");
  });

  it("refuses wrong command lines", () => {
    usage("nothing");
    usage("instance"); // no ID
    usage("instance", "ins-1", "x"); // two arguments
    usage("instance", "../../etc/passwd"); // not an instance ID: logs must never read outside the data directory
    usage("logs", "ins-abcd123/"); // ditto
    usage("start"); // no ID
    usage("start", "ins-abcd1234", "--hard"); // --hard is for stop and reboot
    usage("instances", "--wait");
    usage("stop", "ins-abcd1234", "--timeout", "0");
    usage("stop", "ins-abcd1234", "--timeout", "ten");
    usage("logs", "ins-abcd1234", "--tail", "-1");
    usage("import");
    usage("import", "ftp://host/x.qcow2");
    usage("instances", "--secret-key", "s"); // unknown options are refused, not ignored
    usage("start", ...Array.from({ length: 101 }, (_, i) => `ins-${String(i).padStart(8, "0")}`));
  });

  it("documents distinct exit codes", () => {
    expect(new Set(Object.values(EXIT)).size).toBe(Object.keys(EXIT).length);
    expect(EXIT).toMatchObject({ OK: 0, API_ERROR: 1, USAGE: 2, UNREACHABLE: 3 });
  });
});

describe("helpers", () => {
  it("finds the command word past --config's value", () => {
    expect(commandName(["--config", "instances", "host"])).toBe("host");
    expect(commandName(["-c", "f", "logs", "ins-abcd1234"])).toBe("logs");
    expect(commandName(["--json"])).toBeUndefined();
    expect(commandName(["run"])).toBe("run");
  });

  it("turns files into file:// URLs (percent-encoded) and names images after them", () => {
    expect(importUrl("/var/img/a#b.qcow2", "/")).toBe("file:///var/img/a%23b.qcow2");
    expect(importUrl("file:///x.raw", "/")).toBe("file:///x.raw");
    expect(() => importUrl("s3://bucket/x", "/")).toThrow(UsageError);
    expect(defaultImageName("/a/b/jammy.img.xz")).toBe("jammy");
    expect(defaultImageName("https://h/p/x.qcow2?sig=1")).toBe("x");
    expect(defaultImageName("/a/" + "n".repeat(80))).toHaveLength(60);
  });
});
