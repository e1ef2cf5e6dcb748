import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "../../..");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** Every module a file imports, resolved to a path under the repository. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/^(?:import|export)[^;]*? from "(\.[^"]+)";/gm)].map((m) => relative(root, resolve(file, "..", m[1]!)).replace(/\.js$/, ".ts"));
}

describe("imports run one way: the API edge → the domain → the drivers", () => {
  it("no domain module imports the API edge (its schemas, its error map)", () => {
    const edge = new Set(["agent/dispatch.ts", "agent/main.ts", "agent/cli.ts", "agent/config.ts"]);
    const domain = sourceFiles(join(root, "agent")).filter((f) => {
      const rel = relative(root, f);
      // agent/cli/ is the operator command line: a client of the API, above its edge (it signs with api/tc3.ts).
      return !rel.startsWith("agent/api/") && !rel.startsWith("agent/metadata/") && !rel.startsWith("agent/cli/") && !edge.has(rel);
    });
    const wrong = domain.flatMap((f) => importsOf(f).filter((i) => i.startsWith("agent/api/")).map((i) => `${relative(root, f)} → ${i}`));
    expect(domain.length).toBeGreaterThan(40);
    expect(wrong).toEqual([]);
  });

  it("the domain raises its own errors: no domain module imports the CVM ApiError", () => {
    const edge = (rel: string) => rel.startsWith("agent/api/") || rel.startsWith("agent/metadata/") || ["agent/dispatch.ts", "agent/main.ts", "agent/cli.ts", "agent/config.ts", "agent/errors.ts"].includes(rel);
    const raising = sourceFiles(join(root, "agent"))
      .map((f) => relative(root, f))
      .filter((rel) => !edge(rel) && /import \{[^}]*\bApiError\b[^}]*\} from/.test(readFileSync(join(root, rel), "utf8")));
    expect(raising).toEqual([]);
  });

  it("no driver imports the agent", () => {
    const wrong = sourceFiles(join(root, "drivers")).flatMap((f) => importsOf(f).filter((i) => i.startsWith("agent/")).map((i) => `${relative(root, f)} → ${i}`));
    expect(wrong).toEqual([]);
  });
});
