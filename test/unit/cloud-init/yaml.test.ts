import { describe, expect, it } from "vitest";
import { renderYaml } from "../../../cloud-init/yaml.js";

describe("renderYaml", () => {
  it("quotes every string so YAML 1.1 readers cannot turn it into a boolean, number or null", () => {
    expect(renderYaml({ a: "no", b: "0755", c: "null", d: "1e3", e: "a: b # c" })).toBe(
      'a: "no"\nb: "0755"\nc: "null"\nd: "1e3"\ne: "a: b # c"\n',
    );
  });

  it("writes nested mappings and sequences of mappings in block style", () => {
    expect(renderYaml({ users: [{ name: "root", groups: ["a", "b"] }, "default"], opts: { x: 1, y: true, z: null } })).toBe(
      'users:\n  - name: "root"\n    groups:\n      - "a"\n      - "b"\n  - "default"\nopts:\n  x: 1\n  y: true\n  z: null\n',
    );
  });

  it("writes empty collections inline, quotes unusual keys and leaves out undefined entries", () => {
    expect(renderYaml({ empty: [], none: {}, "set-name": "eth0", "a b": 1, gone: undefined })).toBe(
      'empty: []\nnone: {}\nset-name: "eth0"\n"a b": 1\n',
    );
  });

  it("escapes newlines and quotes inside strings", () => {
    expect(renderYaml({ content: 'line "1"\nline 2\n' })).toBe('content: "line \\"1\\"\\nline 2\\n"\n');
  });
});
