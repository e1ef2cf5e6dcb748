import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const unitPath = new URL("../../systemd/cdh-agent.service", import.meta.url);
const unit = readFileSync(unitPath, "utf8");

function findSystemdAnalyze(): string | null {
  for (const p of ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]) if (existsSync(p)) return p;
  return null;
}
const analyze = findSystemdAnalyze();

/** The unit's settings as [key, value] pairs (comments and section headers dropped). */
function settings(text: string): Array<[string, string]> {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("["))
    .map((l) => {
      const i = l.indexOf("=");
      return [l.slice(0, i), l.slice(i + 1)] as [string, string];
    });
}

describe("systemd/cdh-agent.service", () => {
  const tmp = mkdtempSync(join(tmpdir(), "cdh-unit-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("starts after libvirtd, restarts on failure and reads the optional env file", () => {
    const s = settings(unit);
    const values = (key: string) => s.filter(([k]) => k === key).map(([, v]) => v);
    expect(values("After").join(" ").split(/\s+/)).toContain("libvirtd.service");
    expect(values("Wants").join(" ").split(/\s+/)).toContain("libvirtd.service");
    expect(values("Restart")).toEqual(["on-failure"]);
    expect(values("EnvironmentFile")).toEqual(["-/etc/cdh-agent/env"]);
    expect(values("ExecStart")).toEqual(["/usr/bin/node --max-semi-space-size=2 --max-old-space-size=384 /opt/cdh-agent/dist/agent/cli.js run"]);
    expect(values("StateDirectory")).toEqual(["cdh-agent"]);
    expect(values("NoNewPrivileges")).toEqual(["yes"]);
    expect(values("ProtectSystem")).toEqual(["strict"]);
    // Node's JIT needs W+X pages; /dev/kvm must stay visible for virt_type=auto.
    expect(values("MemoryDenyWriteExecute")).toEqual([]);
    expect(values("PrivateDevices")).toEqual([]);
    expect(values("CapabilityBoundingSet").join(" ")).toContain("CAP_NET_BIND_SERVICE");
    expect(values("CapabilityBoundingSet").join(" ")).not.toContain("CAP_SYS_ADMIN");
  });

  it.skipIf(analyze === null)("passes systemd-analyze verify without a warning about the unit", () => {
    // verify checks that ExecStart's binary exists: point it at this node when /usr/bin/node is absent.
    const text = existsSync("/usr/bin/node") ? unit : unit.replace("/usr/bin/node", process.execPath);
    const copy = join(tmp, "cdh-agent.service");
    writeFileSync(copy, text);
    const result = spawnSync(analyze!, ["verify", copy], { encoding: "utf8" });
    // verify exits 0 on unknown keys and bad values but prints them: any line about our unit is a failure.
    const complaints = `${result.stdout}\n${result.stderr}`
      .split("\n")
      .filter((l) => l.includes("cdh-agent"));
    expect(complaints).toEqual([]);
    expect(result.status).toBe(0);
  });

  it.skipIf(analyze === null)("is checked by a verify that does catch mistakes", () => {
    const copy = join(tmp, "broken", "cdh-agent.service");
    mkdirSync(join(tmp, "broken"), { recursive: true });
    writeFileSync(copy, unit.replace("Restart=on-failure", "Restart=sometimes\nNoSuchKey=1"));
    const result = spawnSync(analyze!, ["verify", copy], { encoding: "utf8" });
    const complaints = result.stderr.split("\n").filter((l) => l.includes("cdh-agent"));
    expect(complaints.length).toBeGreaterThanOrEqual(2);
  });
});
