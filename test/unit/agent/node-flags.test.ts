import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { AGENT_NODE_OPTIONS, missingNodeOptions } from "../../../agent/node-flags.js";

const repo = resolve(import.meta.dirname, "../../..");
const read = (path: string) => readFileSync(resolve(repo, path), "utf8");
const flags = AGENT_NODE_OPTIONS.join(" ");

describe("the agent's node options", () => {
  it("cap the young generation and the old generation's growth", () => {
    expect(AGENT_NODE_OPTIONS.some((o) => o.startsWith("--max-semi-space-size="))).toBe(true);
    expect(AGENT_NODE_OPTIONS.some((o) => o.startsWith("--max-old-space-size="))).toBe(true);
  });

  it("are on every launcher's command line", () => {
    const execStart = /^ExecStart=(.*)$/m.exec(read("systemd/cdh-agent.service"))?.[1];
    expect(execStart).toBe(`/usr/bin/node ${flags} /opt/cdh-agent/dist/agent/cli.js run`);
    const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string>; bin: Record<string, string> };
    expect(pkg.scripts.start).toContain(`node ${flags} dist/agent/cli.js run`);
    // The npm bin runs dist/agent/cli.js through its #! line, which tsc copies from the source.
    expect(pkg.bin["cdh-agent"]).toBe("dist/agent/cli.js");
    expect(read("agent/cli.ts").split("\n")[0]).toBe(`#!/usr/bin/env -S node ${flags}`);
  });

  it("are found missing only when neither the command line nor NODE_OPTIONS has them", () => {
    expect(missingNodeOptions([], undefined)).toEqual([...AGENT_NODE_OPTIONS]);
    expect(missingNodeOptions([], "")).toEqual([...AGENT_NODE_OPTIONS]);
    expect(missingNodeOptions(["--enable-source-maps"], "--stack-trace-limit=20")).toEqual([...AGENT_NODE_OPTIONS]);
    expect(missingNodeOptions(["--max-semi-space-size=2"], undefined)).toEqual(["--max-old-space-size=384"]);
    expect(missingNodeOptions([...AGENT_NODE_OPTIONS], undefined)).toEqual([]);
    expect(missingNodeOptions([], `--trace-gc ${flags}`)).toEqual([]);
    // Another size chosen by the operator, or V8's underscore spelling, counts.
    expect(missingNodeOptions(["--max-semi-space-size=8", "--max-old-space-size=1024"], undefined)).toEqual([]);
    expect(missingNodeOptions(["--max_semi_space_size=1"], "--max_old_space_size=512")).toEqual([]);
  });
});
