import { describe, expect, it } from "vitest";
import { linesWithRepeatedKeys, topLevelKeys } from "../../support/log-lines.js";

describe("log line key reader", () => {
  it("lists the top-level keys in order and skips nested objects, arrays and escaped quotes", () => {
    const line = JSON.stringify({ level: 30, msg: 'a "quoted", {odd} text', err: { component: "x", list: [{ a: 1 }] }, hostId: "h" });
    expect(topLevelKeys(line)).toEqual(["level", "msg", "err", "hostId"]);
  });

  it("finds a key written twice, which JSON.parse would hide", () => {
    const text = ['{"level":30,"component":"api","component":"api","msg":"x"}', '{"level":30,"component":"api","msg":"y"}', "not json"].join("\n");
    expect(linesWithRepeatedKeys(text)).toEqual([{ line: '{"level":30,"component":"api","component":"api","msg":"x"}', repeated: ["component"] }]);
  });
});
