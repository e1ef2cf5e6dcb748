import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ExecError } from "../../../drivers/exec/runner.js";
import { buildDomainXml } from "../../../drivers/libvirt/domain-xml.js";
import { parseDomainList, VirshHypervisor } from "../../../drivers/libvirt/virsh.js";
import {
  DomainNotFoundError,
  DomainStateError,
  GuestAgentError,
  LibvirtUnavailableError,
} from "../../../drivers/libvirt/types.js";
import { RecordingRunner } from "../../support/recording-runner.js";
import { biosKvmSpec } from "./specs.js";

const URI = "qemu:///system";
const v = (...args: string[]) => ["virsh", "-c", URI, ...args];
const notFound = (name: string) => ({ exitCode: 1, stderr: `error: failed to get domain '${name}'\n` });

describe("VirshHypervisor", () => {
  let runner: RecordingRunner;
  let tmpDir: string;
  let hv: VirshHypervisor;

  beforeEach(async () => {
    runner = new RecordingRunner();
    tmpDir = await mkdtemp(join(tmpdir(), "virsh-unit-"));
    hv = new VirshHypervisor({ runner, uri: URI, tmpDir, kvmUsable: async () => false });
  });
  afterEach(async () => {
    await rm(tmpDir, { recursive: true, force: true });
  });

  it("defines a domain from a temporary XML file that it removes afterwards", async () => {
    let defined = "";
    runner.on(
      (argv) => argv[3] === "define",
      async (argv) => {
        defined = await readFile(argv[5]!, "utf8");
        return { stdout: "Domain defined\n" };
      },
    );
    await hv.defineDomain(biosKvmSpec);
    const [argv] = runner.commands;
    expect(argv?.slice(0, 5)).toEqual(v("define", "--file"));
    expect(argv?.[5]).toMatch(new RegExp(`^${tmpDir}/domain-[0-9a-f-]+\\.xml$`));
    expect(argv?.[6]).toBe("--validate");
    expect(defined).toBe(buildDomainXml(biosKvmSpec));
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it("removes the temporary file also when define fails", async () => {
    runner.on((argv) => argv[3] === "define", { exitCode: 1, stderr: "error: XML error: bad\n" });
    await expect(hv.defineDomain(biosKvmSpec)).rejects.toThrow(/XML error: bad/);
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it("gets a domain from its state and its persistent XML", async () => {
    runner
      .on(v("domstate", "--domain", "ins-7k2m9xqa"), { stdout: "running\n\n" })
      .on(v("dumpxml", "--domain", "ins-7k2m9xqa", "--inactive"), { stdout: buildDomainXml(biosKvmSpec) });
    expect(await hv.getDomain("ins-7k2m9xqa")).toEqual({ spec: biosKvmSpec, state: "running" });
  });

  it("returns null for a domain that does not exist", async () => {
    runner.on(v("domstate", "--domain", "ins-nothere"), notFound("ins-nothere"));
    expect(await hv.getDomain("ins-nothere")).toBeNull();
    expect(await hv.domainState("ins-nothere")).toBeNull();
    expect(runner.commands).toHaveLength(2);
  });

  it("gets many domains with one virsh script per batch, leaving out those that vanished", async () => {
    const other = { ...biosKvmSpec, name: "ins-bbbb2222" };
    runner.on(
      (argv) => argv[3]?.startsWith("echo @@cdh-agent-domain@@ ins-7k2m9xqa;") === true,
      {
        stdout: [
          "@@cdh-agent-domain@@ ins-7k2m9xqa",
          "running",
          "",
          "@@cdh-agent-section@@",
          buildDomainXml(biosKvmSpec),
          "@@cdh-agent-domain@@ ins-gone0000",
          "@@cdh-agent-section@@",
          "@@cdh-agent-domain@@ ins-bbbb2222",
          "shut off",
          "",
          "@@cdh-agent-section@@",
          buildDomainXml(other),
          "@@cdh-agent-domain@@",
          "",
        ].join("\n"),
      },
    );
    const got = await hv.getDomains(["ins-7k2m9xqa", "ins-gone0000", "ins-bbbb2222"]);
    expect(runner.commands).toHaveLength(1);
    expect(runner.commands[0]![3]).toBe(
      "echo @@cdh-agent-domain@@ ins-7k2m9xqa; domstate --domain ins-7k2m9xqa; echo @@cdh-agent-section@@; dumpxml --domain ins-7k2m9xqa --inactive; " +
        "echo @@cdh-agent-domain@@ ins-gone0000; domstate --domain ins-gone0000; echo @@cdh-agent-section@@; dumpxml --domain ins-gone0000 --inactive; " +
        "echo @@cdh-agent-domain@@ ins-bbbb2222; domstate --domain ins-bbbb2222; echo @@cdh-agent-section@@; dumpxml --domain ins-bbbb2222 --inactive; " +
        "echo @@cdh-agent-domain@@",
    );
    expect([...got.entries()]).toEqual([
      ["ins-7k2m9xqa", { spec: biosKvmSpec, state: "running" }],
      ["ins-bbbb2222", { spec: other, state: "shut off" }],
    ]);
  });

  it("asks only for the XML of domains whose state is known, and gives them that state", async () => {
    const other = { ...biosKvmSpec, name: "ins-bbbb2222" };
    runner.on(
      (argv) => argv[3]?.startsWith("echo @@cdh-agent-domain@@ ins-7k2m9xqa;") === true,
      {
        stdout: [
          "@@cdh-agent-domain@@ ins-7k2m9xqa",
          buildDomainXml(biosKvmSpec),
          "@@cdh-agent-domain@@ ins-gone0000",
          "@@cdh-agent-domain@@ ins-bbbb2222",
          "paused",
          "",
          "@@cdh-agent-section@@",
          buildDomainXml(other),
          "@@cdh-agent-domain@@",
          "",
        ].join("\n"),
      },
    );
    const known = new Map([
      ["ins-7k2m9xqa", "shut off" as const],
      ["ins-gone0000", "running" as const],
    ]);
    const got = await hv.getDomains(["ins-7k2m9xqa", "ins-gone0000", "ins-bbbb2222"], known);
    expect(runner.commands[0]![3]).toBe(
      "echo @@cdh-agent-domain@@ ins-7k2m9xqa; dumpxml --domain ins-7k2m9xqa --inactive; " +
        "echo @@cdh-agent-domain@@ ins-gone0000; dumpxml --domain ins-gone0000 --inactive; " +
        "echo @@cdh-agent-domain@@ ins-bbbb2222; domstate --domain ins-bbbb2222; echo @@cdh-agent-section@@; dumpxml --domain ins-bbbb2222 --inactive; " +
        "echo @@cdh-agent-domain@@",
    );
    // The one that vanished (its dumpxml failed) is left out; the others carry the known or the read state.
    expect([...got.entries()]).toEqual([
      ["ins-7k2m9xqa", { spec: biosKvmSpec, state: "shut off" }],
      ["ins-bbbb2222", { spec: other, state: "paused" }],
    ]);
  });

  it("splits many domains into batches of 125 and asks for an odd name on its own", async () => {
    const names = Array.from({ length: 300 }, (_, i) => `ins-${String(i).padStart(8, "0")}`);
    runner.on((argv) => argv[3]?.startsWith("echo ") === true, { stdout: "@@cdh-agent-domain@@\n" });
    runner.on(v("domstate", "--domain", "odd name"), notFound("odd name"));
    expect((await hv.getDomains([...names, "odd name"])).size).toBe(0);
    const scripts = runner.commands.filter((a) => a[3]?.startsWith("echo "));
    // Two at once, started in order.
    expect(scripts.map((a) => (a[3]!.match(/dumpxml/g) ?? []).length)).toEqual([125, 125, 50]);
    expect(runner.commands).toContainEqual(v("domstate", "--domain", "odd name"));
  });

  it("lists all domains with one virsh call", async () => {
    const stdout = [
      "6f1c2a9e-3b4d-4c5e-8f70-112233445566 ins-aaaa1111",
      "0a0b0c0d-1e1f-4a2b-9c3d-4e5f60718293 ins-bbbb2222",
      "11111111-2222-4333-8444-555555555555 a name with spaces",
      "",
      "@@cdh-agent-section@@",
      "6f1c2a9e-3b4d-4c5e-8f70-112233445566",
      "0a0b0c0d-1e1f-4a2b-9c3d-4e5f60718293",
      "",
      "@@cdh-agent-section@@",
      "Domain: 'ins-aaaa1111'",
      "  state.state=1",
      "  state.reason=1",
      "",
      "Domain: 'ins-bbbb2222'",
      "  state.state=5",
      "  state.reason=0",
      "",
      "Domain: 'a name with spaces'",
      "  state.state=3",
      "  state.reason=0",
      "",
    ].join("\n");
    runner.on(
      v("list --all --uuid --name; echo @@cdh-agent-section@@; list --all --persistent --uuid; echo @@cdh-agent-section@@; domstats --state --nowait"),
      { stdout },
    );
    expect(await hv.listDomains()).toEqual([
      { name: "ins-aaaa1111", uuid: "6f1c2a9e-3b4d-4c5e-8f70-112233445566", state: "running", persistent: true },
      { name: "ins-bbbb2222", uuid: "0a0b0c0d-1e1f-4a2b-9c3d-4e5f60718293", state: "shut off", persistent: true },
      { name: "a name with spaces", uuid: "11111111-2222-4333-8444-555555555555", state: "paused", persistent: false },
    ]);
    expect(runner.commands).toHaveLength(1);
  });

  it("leaves out a domain that vanished between the list and its state", () => {
    const out = "u1 gone\n\n@@cdh-agent-section@@\nu1\n@@cdh-agent-section@@\n\n";
    expect(parseDomainList(out)).toEqual([]);
    expect(parseDomainList("\n@@cdh-agent-section@@\n\n@@cdh-agent-section@@\n")).toEqual([]);
  });

  it("issues the power commands with ACPI where it matters", async () => {
    runner.on(() => true, { stdout: "ok\n" });
    await hv.start("d");
    await hv.shutdown("d");
    await hv.reboot("d");
    await hv.reset("d");
    await hv.destroy("d");
    await hv.undefine("d");
    expect(runner.commands).toEqual([
      v("start", "--domain", "d"),
      v("shutdown", "--domain", "d", "--mode", "acpi"),
      v("reboot", "--domain", "d", "--mode", "acpi"),
      v("reset", "--domain", "d"),
      v("destroy", "--domain", "d"),
      v("undefine", "--domain", "d", "--nvram", "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"),
    ]);
  });

  it("treats destroy of a stopped domain and undefine of a missing one as done", async () => {
    runner
      .on(v("destroy", "--domain", "d"), { exitCode: 1, stderr: "error: Failed to destroy domain 'd'\nerror: Requested operation is not valid: domain is not running\n" })
      .on((argv) => argv[3] === "undefine", notFound("d"));
    await expect(hv.destroy("d")).resolves.toBeUndefined();
    await expect(hv.undefine("d")).resolves.toBeUndefined();
  });

  it("maps failures to typed errors with the ExecError as cause", async () => {
    runner
      .on(v("start", "--domain", "gone"), notFound("gone"))
      .on(v("start", "--domain", "up"), { exitCode: 1, stderr: "error: Failed to start domain 'up'\nerror: Requested operation is not valid: domain is already running\n" })
      .on(v("destroy", "--domain", "gone"), notFound("gone"))
      .on(v("start", "--domain", "x"), { exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n" });
    const gone = await hv.start("gone").catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(DomainNotFoundError);
    expect((gone as DomainNotFoundError).domain).toBe("gone");
    expect((gone as Error).cause).toBeInstanceOf(ExecError);
    await expect(hv.start("up")).rejects.toBeInstanceOf(DomainStateError);
    await expect(hv.destroy("gone")).rejects.toBeInstanceOf(DomainNotFoundError);
    await expect(hv.start("x")).rejects.toBeInstanceOf(LibvirtUnavailableError);
  });

  it("sets metadata in the config, and live as well while the domain runs, on virsh's standard input", async () => {
    const stdin = ["virsh", "-q", "-c", URI];
    const line = (name: string, ...extra: string[]) =>
      [
        "metadata", "--domain", name, "--uri", "https://cdh-agent.dev/xmlns/instance/1", "--key", "cdh", "--set",
        '<instance><record format="json">{"a":"&lt;1&gt;","p":"it\'s &#xe9;"}</record></instance>', "--config", ...extra,
      ].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ") + "\n";
    runner
      .on(v("domstate", "--domain", "off"), { stdout: "shut off\n" })
      .on(v("domstate", "--domain", "on"), { stdout: "running\n" })
      .on(stdin, (_argv, options) => ({ stdout: `virsh # ${String(options?.input)}virsh # \n` }));
    const record = '{"a":"<1>","p":"it\'s \u00e9"}';
    await hv.setMetadata("off", record);
    await hv.setMetadata("on", record);
    expect(runner.commands).toEqual([v("domstate", "--domain", "off"), stdin, v("domstate", "--domain", "on"), stdin]);
    expect(runner.runs.filter((r) => r.argv[1] === "-q").map((r) => r.options?.input)).toEqual([line("off"), line("on", "--live")]);
    for (const run of runner.runs) expect(run.argv.join(" ")).not.toContain("record");
  });

  it("gives a guest agent command (a password) on standard input and reads its answer", async () => {
    const stdin = ["virsh", "-q", "-c", URI];
    const command = { execute: "guest-set-user-password", arguments: { username: "root", password: "UzNjcjN0IQ==", crypted: false } };
    runner
      .once(stdin, (_argv, options) => ({ stdout: `virsh # ${String(options?.input)}{"return":{}}\nvirsh # \n` }))
      .once(stdin, { stderr: "error: Guest agent is not responding: QEMU guest agent is not connected\n" });
    expect(await hv.guestAgent("ins-1", command)).toEqual({});
    expect(runner.runs[0]?.options?.input).toBe(`'qemu-agent-command' '--domain' 'ins-1' '--timeout' '10' '${JSON.stringify(command)}'\n`);
    expect(runner.runs[0]?.argv).toEqual(stdin);
    const error = await hv.guestAgent("ins-1", command).then(() => null, (e: unknown) => e);
    expect(error).toBeInstanceOf(GuestAgentError);
    expect((error as Error).message).toMatch(/not responding/);
    expect((error as Error).message).not.toContain("UzNjcjN0IQ");
  });

  it("pings with a cheap call and says false when libvirtd is gone", async () => {
    runner.once(v("uri"), { stdout: "qemu:///system\n" }).once(v("uri"), { exitCode: 1, stderr: "error: failed to connect to the hypervisor\n" });
    expect(await hv.ping()).toBe(true);
    expect(await hv.ping()).toBe(false);
  });

  it("reports KVM through the injected check, not through virsh", async () => {
    expect(await hv.capabilities()).toEqual({ kvmUsable: false });
    const yes = new VirshHypervisor({ runner, uri: URI, tmpDir, kvmUsable: async () => true });
    expect(await yes.capabilities()).toEqual({ kvmUsable: true });
    expect(runner.commands).toEqual([]);
  });

  it("watches events with one virsh event child", () => {
    runner.allowStreams().on(v("uri"), { stdout: URI });
    const watch = hv.watchEvents({ onEvent: () => {}, onConnected: () => {}, onDisconnected: () => {} });
    expect(runner.streams.map((s) => s.argv)).toEqual([v("event", "--all", "--loop", "--timestamp")]);
    watch.stop();
    expect(runner.streams[0]?.killed).toBe(true);
  });
});
