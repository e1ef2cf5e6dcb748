import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_KEYS, envVarName } from "../../agent/config.js";
import { ERROR_CODES } from "../../agent/errors.js";

const readme = readFileSync(resolve(import.meta.dirname, "../../README.md"), "utf8");
const pkg = JSON.parse(readFileSync(resolve(import.meta.dirname, "../../package.json"), "utf8")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

describe("the README", () => {
  it("opens its set-up with the two commands: run the agent, run the tests", () => {
    const setup = readme.slice(readme.indexOf("## Set-up"));
    const block = /```sh\n([\s\S]*?)```/.exec(setup)?.[1] ?? "";
    const commands = block.split("\n").map((l) => l.replace(/#.*/, "").trim()).filter(Boolean);
    expect(commands).toEqual(["bash scripts/agent.sh", "bash scripts/test.sh"]);
  });

  it("lists every error code the agent can return, in its error table", () => {
    const table = readme.slice(readme.indexOf("### Error codes"));
    const missing = Object.keys(ERROR_CODES).filter((code) => !table.includes(`| \`${code}\` |`));
    expect(missing).toEqual([]);
  });

  it("documents every configuration key with its environment variable", () => {
    const missing = CONFIG_KEYS.filter((key) => !readme.includes(`| \`${key}\` | \`${envVarName(key)}\` |`));
    expect(missing).toEqual([]);
  });

  it("names every npm dependency with a reason", () => {
    const all = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.devDependencies)];
    const deps = readme.slice(readme.indexOf("## Dependencies"));
    const missing = all.filter((name) => !deps.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });
});
