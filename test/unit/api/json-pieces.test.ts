import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { jsonPieces } from "../../../agent/api/server.js";

describe("jsonPieces (the API's response body in pieces)", () => {
  it("joins to exactly what JSON.stringify writes, for any response", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.oneof(fc.jsonValue(), fc.array(fc.jsonValue()), fc.constant(undefined))), (response) => {
        expect(jsonPieces(response).join("")).toBe(JSON.stringify({ Response: response }));
      }),
      { numRuns: 300 },
    );
  });

  it("writes undefined and functions inside arrays as null, and leaves such fields out, as JSON.stringify does", () => {
    const response = { A: [undefined, () => 1, 1], B: undefined, C: () => 2, D: [], E: [new Date(0)], RequestId: "r" };
    expect(jsonPieces(response).join("")).toBe(JSON.stringify({ Response: response }));
  });

  it("cuts a page of 100 instance-sized elements into pieces of about 32 KiB, none a large string", () => {
    const instance = { InstanceId: "ins-abcdefgh", Padding: "x".repeat(1700) };
    const response = { TotalCount: 1000, InstanceSet: Array.from({ length: 100 }, () => instance), RequestId: "r" };
    const pieces = jsonPieces(response);
    expect(pieces.join("")).toBe(JSON.stringify({ Response: response }));
    expect(pieces.length).toBeGreaterThan(4);
    for (const piece of pieces) expect(piece.length).toBeLessThanOrEqual(32 * 1024 + 1800);
  });
});
