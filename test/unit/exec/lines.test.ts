import { describe, expect, it } from "vitest";
import { LineSplitter } from "../../../drivers/exec/lines.js";

function collect() {
  const lines: string[] = [];
  return { lines, splitter: new LineSplitter((line) => lines.push(line)) };
}

describe("LineSplitter", () => {
  it("joins a line split across chunks", () => {
    const { lines, splitter } = collect();
    splitter.push("hel");
    splitter.push("lo\nwor");
    expect(lines).toEqual(["hello"]);
    splitter.push("ld\n");
    expect(lines).toEqual(["hello", "world"]);
  });

  it("delivers the last partial line on flush, once", () => {
    const { lines, splitter } = collect();
    splitter.push("a\nb");
    splitter.flush();
    splitter.flush();
    splitter.push("ignored\n");
    expect(lines).toEqual(["a", "b"]);
  });

  it("keeps empty lines and drops a carriage return before the newline", () => {
    const { lines, splitter } = collect();
    splitter.push("x\r\n\ny\n");
    splitter.flush();
    expect(lines).toEqual(["x", "", "y"]);
  });

  it("decodes a multi-byte character split between buffers", () => {
    const { lines, splitter } = collect();
    const bytes = Buffer.from("é✓\n");
    for (const byte of bytes) splitter.push(Buffer.from([byte]));
    expect(lines).toEqual(["é✓"]);
  });
});
