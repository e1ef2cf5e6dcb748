import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { decideSweep, listQcow2Files } from "../../../agent/images/sweep.js";

describe("decideSweep", () => {
  const base = (n: string) => `/data/images/base/${n}.qcow2`;

  it("removes only bases that no record names, nobody was just handed and no chain contains", () => {
    const d = decideSweep({
      candidates: [base("a"), base("b"), base("c"), base("d"), base("e")],
      recordRefs: new Set([base("a")]),
      handedOut: new Set([base("b")]),
      chainFiles: new Set(["/data/instances/ins-1/system.qcow2", base("c"), "/data/pools/local/snap.qcow2", base("d")]),
    });
    expect(d.remove).toEqual([base("e")]);
    expect(d.keep).toEqual([
      { file: base("a"), why: "record" },
      { file: base("b"), why: "handed-out" },
      { file: base("c"), why: "backing" },
      { file: base("d"), why: "backing" },
    ]);
  });

  it("removes every base when nothing refers to any, and nothing when there are none", () => {
    expect(decideSweep({ candidates: [base("x"), base("x")], recordRefs: new Set(), handedOut: new Set(), chainFiles: new Set() }).remove).toEqual([base("x")]);
    expect(decideSweep({ candidates: [], recordRefs: new Set([base("a")]), handedOut: new Set(), chainFiles: new Set() })).toEqual({ remove: [], keep: [] });
  });
});

describe("listQcow2Files", () => {
  const dir = mkdtempSync(join(tmpdir(), "qcow2-list-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("finds qcow2 files recursively and skips missing directories", async () => {
    mkdirSync(join(dir, "instances/ins-1"), { recursive: true });
    mkdirSync(join(dir, "pools/local/snapshots"), { recursive: true });
    writeFileSync(join(dir, "instances/ins-1/system.qcow2"), "");
    writeFileSync(join(dir, "instances/ins-1/config.iso"), "");
    writeFileSync(join(dir, "pools/local/snapshots/snap-1.qcow2"), "");
    const found = await listQcow2Files([join(dir, "instances"), join(dir, "pools"), join(dir, "missing")]);
    expect(found).toEqual([join(dir, "instances/ins-1/system.qcow2"), join(dir, "pools/local/snapshots/snap-1.qcow2")]);
  });
});
