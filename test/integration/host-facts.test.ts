import { execa } from "execa";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { getHostFacts, nearestExisting } from "../../drivers/host/facts.js";

/** df -B1 figures (size, avail) of the filesystem holding `path`. */
async function df(path: string): Promise<{ size: number; avail: number }> {
  const { stdout } = await execa("df", ["-B1", "--output=size,avail", path]);
  const [size, avail] = stdout.trim().split("\n")[1]!.trim().split(/\s+/).map(Number);
  return { size: size!, avail: avail! };
}

describe("getHostFacts", () => {
  const tmp = mkdtempSync(join(tmpdir(), "cdh-facts-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("reports the CPU count that nproc reports and a CPU model", async () => {
    const facts = await getHostFacts({ dataDir: tmp });
    const nproc = Number((await execa("nproc", ["--all"])).stdout.trim());
    expect(facts.cpuCount).toBe(nproc);
    expect(facts.cpuModel).not.toBe("");
  });

  it("reports MemTotal of /proc/meminfo in bytes", async () => {
    const facts = await getHostFacts({ dataDir: tmp });
    const kib = Number(/^MemTotal:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"))![1]);
    expect(facts.memoryBytes).toBe(kib * 1024);
  });

  it("reports the size and free space of the data directory's filesystem like df -B1", async () => {
    const facts = await getHostFacts({ dataDir: tmp });
    const d = await df(tmp);
    expect(facts.diskPath).toBe(tmp);
    expect(facts.diskTotalBytes).toBe(d.size);
    // Free space moves while other tests write: allow 1 GiB of drift.
    expect(Math.abs(facts.diskFreeBytes - d.avail)).toBeLessThan(1024 ** 3);
  });

  it("measures the nearest existing parent when the data directory does not exist yet", async () => {
    const missing = join(tmp, "not", "yet", "there");
    expect(nearestExisting(missing)).toBe(tmp);
    const facts = await getHostFacts({ dataDir: missing });
    expect(facts.diskPath).toBe(tmp);
    expect(facts.diskTotalBytes).toBe((await df(tmp)).size);
  });

  it("reports the hostname, an IPv4 that is not loopback (or none) and whether /dev/kvm exists", async () => {
    const facts = await getHostFacts({ dataDir: tmp });
    expect(facts.hostname).toBe(hostname());
    // One of the IPv4 addresses other than loopback on a link that is up and has carrier
    // (what Node and libuv list), or "" when there is none (the test host's bridge has no
    // carrier while no guest is attached).
    const links = (await execa("ip", ["-o", "link", "show"])).stdout;
    const running = new Set([...links.matchAll(/^\d+: ([^:@]+)[^<]*<([^>]*)>/gm)].filter((m) => m[2]!.split(",").includes("UP") && m[2]!.split(",").includes("LOWER_UP")).map((m) => m[1]!));
    const { stdout } = await execa("ip", ["-4", "-o", "addr", "show"]);
    const addresses = [...stdout.matchAll(/^\d+: (\S+)\s+inet (\d+\.\d+\.\d+\.\d+)\//gm)].filter((m) => running.has(m[1]!) && !m[2]!.startsWith("127.")).map((m) => m[2]!);
    expect(addresses.length > 0 ? addresses : [""]).toContain(facts.primaryIpv4);
    expect(facts.kvmAvailable).toBe(existsSync("/dev/kvm"));
    const noKvm = await getHostFacts({ dataDir: tmp, kvmDevice: join(tmp, "no-such-device") });
    expect(noKvm.kvmAvailable).toBe(false);
  });
});
