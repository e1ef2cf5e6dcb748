import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HostNameStore } from "../../../agent/host.js";

let dir: string;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("HostNameStore", () => {
  it("keeps the name ModifyHostsAttribute set, for the next agent", async () => {
    dir = await mkdtemp(join(tmpdir(), "host-name-"));
    const file = join(dir, "host.json");
    expect(await new HostNameStore(file).load(() => undefined)).toBeUndefined();
    await new HostNameStore(file).save("rack-7 host");
    expect(await new HostNameStore(file).load(() => undefined)).toBe("rack-7 host");
  });

  it("sets an unreadable file aside, says why, and goes on without it", async () => {
    dir = await mkdtemp(join(tmpdir(), "host-name-"));
    const file = join(dir, "host.json");
    await writeFile(file, '{"version":1,"hostName":""}');
    const reasons: string[] = [];
    expect(await new HostNameStore(file).load((r) => reasons.push(r))).toBeUndefined();
    expect(reasons[0]).toMatch(/hostName/);
    expect((await readdir(dir)).some((n) => n.startsWith("host.json.bad-"))).toBe(true);
  });
});
