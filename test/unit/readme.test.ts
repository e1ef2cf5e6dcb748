import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
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

  it("lists no code in its error table that the catalogue does not have", () => {
    const table = readme.slice(readme.indexOf("### Error codes"));
    const end = table.indexOf("\n\n", table.indexOf("| --- |"));
    const rows = [...table.slice(0, end).matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]!);
    expect(rows.filter((code) => !(code in ERROR_CODES))).toEqual([]);
  });

  it("lists every code the source raises: no code literal outside the catalogue, no cast to ErrorCode", () => {
    const root = resolve(import.meta.dirname, "../..");
    const files = ["agent", "drivers"].flatMap((dir) => sourceFiles(join(root, dir)));
    // Every way a code is raised: new ApiError(code, …), the schemas' fail(ctx, code, …), the
    // network helper and the server's error(code, …); the domain's errors get theirs from the
    // error map, typed ErrorCode. (Codes in tables are typed
    // ErrorCode, which only the catalogue's codes satisfy; a cast would defeat that, hence the second check.)
    const raised = /(?:new ApiError|netError|\berror)\(\s*"([A-Za-z.]+)"|fail\(\s*ctx,\s*"([A-Za-z.]+)"/g;
    const unknown: string[] = [];
    const casts: string[] = [];
    let seen = 0;
    for (const file of files) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(raised)) {
        const code = m[1] ?? m[2]!;
        seen += 1;
        if (!(code in ERROR_CODES)) unknown.push(`${file.slice(root.length + 1)}: ${code}`);
      }
      if (/\bas ErrorCode\b(?!:)/.test(text.replace(/\/\*[\s\S]*?\*\/|\/\/.*/g, ""))) casts.push(file.slice(root.length + 1));
    }
    expect(seen).toBeGreaterThan(60);
    expect(unknown).toEqual([]);
    expect(casts).toEqual([]);
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

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}
