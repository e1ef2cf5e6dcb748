/**
 * virsh-stdin.ts against the real virsh, on libvirt's built-in test driver
 * (test:///default: a fresh in-process hypervisor with one running domain, "test";
 * no libvirtd needed), so the quoting, the output and the failures are virsh's own.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRunner } from "../../../drivers/exec/local.js";
import { ExecError, type CommandRunner, type RunOptions } from "../../../drivers/exec/runner.js";
import {
  asciiJson,
  asciiXml,
  commandOutput,
  runVirshOnStdin,
  virshCommandLine,
  VirshLineError,
} from "../../../drivers/libvirt/virsh-stdin.js";

const URI = "test:///default";
const NS = "https://cdh-agent.dev/xmlns/test/1";

/** LocalRunner that also keeps every argv and input it ran. */
class Spy implements CommandRunner {
  readonly description = "spy";
  readonly runs: { argv: string[]; input: string }[] = [];
  private readonly inner = new LocalRunner({ defaultTimeoutMs: 20_000 });
  run(argv: readonly string[], options?: RunOptions) {
    this.runs.push({ argv: [...argv], input: String(options?.input ?? "") });
    return this.inner.run(argv, options);
  }
  stream(): never {
    throw new Error("no streams here");
  }
  async close(): Promise<void> {}
}

describe("virsh commands on standard input", () => {
  let stateDir: string;
  const runner = new Spy();
  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "virsh-stdin-"));
  });
  afterAll(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  /** In one virsh process (the test driver forgets everything at exit): set, then read back. */
  async function roundTrip(xml: string): Promise<string> {
    const set = ["metadata", "--domain", "test", "--uri", NS, "--key", "t", "--set", xml, "--config"];
    // The test driver's state lives in the virsh process: a second command must share it,
    // so this one test sends two commands; the agent always sends one.
    const line = `${virshCommandLine(set)}\n${virshCommandLine(["metadata", "--domain", "test", "--uri", NS, "--key", "t", "--config"])}\n`;
    const result = await runner.run(["virsh", "-q", "-c", URI], {
      input: line,
      env: { TERM: "dumb", INPUTRC: "/dev/null", VIRSH_HISTSIZE: "0", XDG_CACHE_HOME: join(stateDir, "virsh-state") },
    });
    expect(result.stderr).toBe("");
    // One line per prompt (the echo of a command, long ones scrolled sideways), then the output.
    const lines = result.stdout.split("\n");
    const prompts = lines.flatMap((l, i) => (l.startsWith("virsh # ") ? [i] : []));
    expect(prompts).toHaveLength(3);
    return lines[prompts[1]! + 1] ?? "";
  }

  it("keeps quotes, backslashes, semicolons and non-ASCII characters of an argument exactly", async () => {
    const text = `it's "quoted" \\ back; slash # not a comment $HOME café 中文 😀 del\x7f tab\t`;
    const xml = asciiXml(`<t>${text.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</t>`);
    expect(xml).toMatch(/^[\x20-\x7e]*$/);
    expect(await roundTrip(xml)).toBe(`<t>${text.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</t>`);
  });

  it("answers with the command's output only, without the echo of the command", async () => {
    const result = await runVirshOnStdin(["domstate", "--domain", "test"], { runner, uri: URI, stateDir });
    expect(result.stdout.trim()).toBe("running");
    expect(runner.runs.at(-1)?.argv).toEqual(["virsh", "-q", "-c", URI]);
  });

  it("takes a long argument (100 kB) whole", async () => {
    const big = "x".repeat(100_000);
    const back = await roundTrip(`<t>${big}</t>`);
    expect(back.length).toBe(big.length + 7);
    expect(back === `<t>${big}</t>`).toBe(true);
  });

  it("turns virsh's error line into the ExecError a failed `virsh CMD` gives, without the payload", async () => {
    const error = await runVirshOnStdin(["metadata", "--domain", "nope", "--uri", NS, "--key", "t", "--set", "<t>payload-123</t>", "--config"], {
      runner,
      uri: URI,
      stateDir,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ExecError);
    const exec = error as ExecError;
    expect(exec.failure).toBe("exit");
    expect(exec.exitCode).toBe(1);
    expect(exec.stderr).toMatch(/failed to get domain 'nope'/);
    expect(exec.command).toEqual(["virsh", "-q", "-c", URI]);
    expect(`${exec.message} ${exec.stdout}`).not.toContain("payload-123");
  });

  it("never puts the payload on argv, and writes no command into virsh's history", async () => {
    await runVirshOnStdin(["metadata", "--domain", "test", "--uri", NS, "--key", "t", "--set", "<t>hist-secret-42</t>", "--config"], {
      runner,
      uri: URI,
      stateDir,
    });
    for (const run of runner.runs) expect(run.argv.join(" ")).not.toContain("secret");
    const dir = join(stateDir, "virsh-state", "libvirt", "virsh");
    expect(await readdir(dir)).toEqual(["history"]);
    expect(await readFile(join(dir, "history"), "utf8")).toBe("");
  });

  it("refuses a command that is not printable ASCII (readline would take bytes for keys)", () => {
    expect(() => virshCommandLine(["metadata", "--set", "<t>é</t>"])).toThrow(VirshLineError);
    expect(() => virshCommandLine(["metadata", "--set", "a\nb"])).toThrow(VirshLineError);
    expect(() => virshCommandLine(["metadata", "--set", "a\tb"])).toThrow(VirshLineError);
  });

  it("writes JSON in ASCII without changing its value", () => {
    const value = { password: "pässwörd\x7f😀", n: 1 };
    const text = asciiJson(value);
    expect(text).toMatch(/^[\x20-\x7e]*$/);
    expect(JSON.parse(text)).toEqual(value);
  });

  it("reads the output between the echo of the command and the next prompt", () => {
    expect(commandOutput("virsh # \r<x' '--config'\n{\"return\":{}}\nvirsh # \n")).toBe('{"return":{}}\n');
    expect(commandOutput("virsh # metadata --set 'x'\nvirsh # \n")).toBe("");
    expect(commandOutput("")).toBe("");
  });
});
