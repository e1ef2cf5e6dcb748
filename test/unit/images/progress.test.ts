import { describe, expect, it } from "vitest";
import { LineSplitter } from "../../../drivers/exec/lines.js";
import { parseQemuImgProgress } from "../../../drivers/storage/qemu-img.js";

describe("qemu-img convert -p progress", () => {
  it("reads the percentage of each progress line and nothing else", () => {
    expect(parseQemuImgProgress("    (0.00/100%)")).toBe(0);
    expect(parseQemuImgProgress("    (42.17/100%)")).toBe(42.17);
    expect(parseQemuImgProgress("    (100.00/100%)")).toBe(100);
    expect(parseQemuImgProgress("qemu-img: error while reading")).toBeUndefined();
    expect(parseQemuImgProgress("    (140.00/100%)")).toBeUndefined();
  });

  it("gets one line per redraw when the splitter breaks on carriage returns", () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((l) => lines.push(l), { splitOnCarriageReturn: true });
    // Real output is "\r"-separated redraws, split anywhere between chunks.
    splitter.push("    (0.00/100%)\r    (12.5");
    splitter.push("0/100%)\r");
    splitter.push("\n    (100.00/100%)\r\n");
    splitter.flush();
    expect(lines.map(parseQemuImgProgress)).toEqual([0, 12.5, 100]);
  });

  it("keeps the default splitter's behaviour: a lone carriage return stays inside the line", () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((l) => lines.push(l));
    splitter.push("a\rb\r\n");
    expect(lines).toEqual(["a\rb"]);
  });
});
