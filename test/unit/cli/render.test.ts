/** The human output: aligned tables, escaped cells, flattened fields, the progress bar. */
import { describe, expect, it } from "vitest";
import { cell, flatten, progressBar, renderFields, renderTable } from "../../../agent/cli/render.js";

describe("render", () => {
  it("aligns columns, right-aligns numbers, shows absent values as -", () => {
    const text = renderTable(
      [
        { header: "ID", value: (r: { id: string; cpu?: number; ips: string[] }) => r.id },
        { header: "CPU", value: (r) => r.cpu, right: true },
        { header: "IP", value: (r) => r.ips },
      ],
      [
        { id: "ins-aaaaaaaa", cpu: 16, ips: ["10.0.0.2", "10.0.0.3"] },
        { id: "ins-b", ips: [] },
      ],
    );
    expect(text).toBe(["ID            CPU  IP", "ins-aaaaaaaa   16  10.0.0.2,10.0.0.3", "ins-b           -  -", ""].join("\n"));
  });

  it("escapes control characters a name could carry", () => {
    expect(cell("a\u001b[2Jb\n")).toBe("a\\x1b[2Jb\\x0a");
    expect(cell(null)).toBe("-");
    expect(cell({ a: 1 })).toBe('{"a":1}');
  });

  it("flattens nested fields into paths", () => {
    expect(flatten({ A: 1, B: { C: "x", D: [{ E: 2 }] }, F: ["p", "q"], G: {} })).toEqual([
      ["A", 1],
      ["B.C", "x"],
      ["B.D[0].E", 2],
      ["F", ["p", "q"]],
      ["G", "-"],
    ]);
    expect(renderFields({ Id: "i", LongerKey: 2 })).toBe("Id:         i\nLongerKey:  2\n");
  });

  it("draws the progress bar", () => {
    expect(progressBar(0, 10)).toBe("[..........]   0%");
    expect(progressBar(45, 10)).toBe("[#####.....]  45%");
    expect(progressBar(100, 10)).toBe("[##########] 100%");
    expect(progressBar(250, 4)).toBe("[####] 100%");
    expect(progressBar(Number.NaN, 4)).toBe("[....]   0%");
  });
});
