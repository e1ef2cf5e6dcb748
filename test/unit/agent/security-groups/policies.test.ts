import { describe, expect, it } from "vitest";
import { SgError, type SgErrorKind } from "../../../../agent/network/security-groups/errors.js";
import type { StoredGroup } from "../../../../agent/network/security-groups/model.js";
import { createPolicies, deletePolicies, modifyPolicies, replacePolicy, type ChangeContext } from "../../../../agent/network/security-groups/policies.js";
import type { PolicyInput } from "../../../../agent/network/security-groups/rules.js";

const ctx: ChangeContext = { now: "2026-12-07 10:00:00", groupExists: (id) => id === "sg-other111" };

function group(): StoredGroup {
  return {
    securityGroupId: "sg-self1111",
    name: "g",
    description: "",
    projectId: "0",
    isDefault: false,
    createdTime: "2026-12-07 09:00:00",
    updateTime: "2026-12-07 09:00:00",
    seq: 1,
    tags: [],
    version: 0,
    ingress: [],
    egress: [],
  };
}

const tcp = (port: number, extra: Partial<PolicyInput> = {}): PolicyInput => ({ Protocol: "TCP", Port: String(port), CidrBlock: "0.0.0.0/0", Action: "ACCEPT", ...extra });
const ports = (g: StoredGroup, d: "ingress" | "egress" = "ingress") => g[d].map((p) => p.port);

function kindOf(work: () => void): SgErrorKind {
  try {
    work();
  } catch (error) {
    if (error instanceof SgError) return error.kind;
    throw error;
  }
  throw new Error("no refusal");
}

describe("CreateSecurityGroupPolicies", () => {
  it("appends without PolicyIndex and inserts at it, shifting the rules below; each change raises Version by 1", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(1), tcp(2)] }, ctx);
    expect(ports(g)).toEqual(["1", "2"]);
    expect(g.version).toBe(1);
    createPolicies(g, { Ingress: [tcp(10, { PolicyIndex: 1 }), tcp(11, { PolicyIndex: 1 })] }, ctx);
    expect(ports(g)).toEqual(["1", "10", "11", "2"]);
    createPolicies(g, { Ingress: [tcp(0, { PolicyIndex: 0, Port: "3" })] }, ctx);
    expect(ports(g)).toEqual(["3", "1", "10", "11", "2"]);
    createPolicies(g, { Ingress: [tcp(9, { PolicyIndex: 5 })] }, ctx);
    expect(ports(g)).toEqual(["3", "1", "10", "11", "2", "9"]);
    expect(g.version).toBe(4);
    expect(g.updateTime).toBe(ctx.now);
  });

  it("refuses different PolicyIndex values, an index past the end, both directions, and no rule", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(1)] }, ctx);
    expect(kindOf(() => createPolicies(g, { Ingress: [tcp(2, { PolicyIndex: 0 }), tcp(3, { PolicyIndex: 1 })] }, ctx))).toBe("BadValue");
    expect(kindOf(() => createPolicies(g, { Ingress: [tcp(2, { PolicyIndex: 2 })] }, ctx))).toBe("Range");
    expect(kindOf(() => createPolicies(g, { Ingress: [tcp(2)], Egress: [tcp(3)] }, ctx))).toBe("Coexist");
    expect(kindOf(() => createPolicies(g, { Ingress: [], Egress: [] }, ctx))).toBe("Empty");
    expect(g.version).toBe(1);
    expect(ports(g)).toEqual(["1"]);
  });

  it("checks Version when given: a stale one is VersionMismatch, the current one passes", () => {
    const g = group();
    createPolicies(g, { Version: "0", Egress: [tcp(1)] }, ctx);
    expect(kindOf(() => createPolicies(g, { Version: "0", Egress: [tcp(2)] }, ctx))).toBe("VersionMismatch");
    createPolicies(g, { Version: "1", Egress: [tcp(2)] }, ctx);
    expect(ports(g, "egress")).toEqual(["1", "2"]);
  });

  it("refuses a rule the direction already has, or one given twice (DuplicatePolicy)", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(22)] }, ctx);
    expect(kindOf(() => createPolicies(g, { Ingress: [tcp(22, { Protocol: "tcp", PolicyDescription: "again" })] }, ctx))).toBe("DuplicatePolicy");
    expect(kindOf(() => createPolicies(g, { Ingress: [tcp(80), tcp(80)] }, ctx))).toBe("DuplicatePolicy");
    // The same rule in the other direction is another rule.
    createPolicies(g, { Egress: [tcp(22)] }, ctx);
  });

  it("takes 100 rules in a direction and refuses the 101st (PolicyQuota)", () => {
    const g = group();
    createPolicies(g, { Ingress: Array.from({ length: 100 }, (_v, i) => tcp(i + 1)) }, ctx);
    expect(g.ingress).toHaveLength(100);
    expect(kindOf(() => createPolicies(g, { Ingress: [tcp(500)] }, ctx))).toBe("PolicyQuota");
    createPolicies(g, { Egress: Array.from({ length: 100 }, (_v, i) => tcp(i + 1)) }, ctx);
    expect(g.egress).toHaveLength(100);
  });

  it("a SecurityGroupId peer must exist, or be the group itself", () => {
    const g = group();
    createPolicies(g, { Ingress: [{ Protocol: "ALL", SecurityGroupId: "sg-self1111", Action: "ACCEPT" }, { Protocol: "ALL", SecurityGroupId: "sg-other111", Action: "ACCEPT" }] }, ctx);
    expect(kindOf(() => createPolicies(g, { Ingress: [{ Protocol: "ALL", SecurityGroupId: "sg-nothere1", Action: "ACCEPT" }] }, ctx))).toBe("GroupNotFound");
  });
});

describe("ReplaceSecurityGroupPolicy", () => {
  it("replaces the rule at PolicyIndex, which is required and must exist", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(1), tcp(2), tcp(3)] }, ctx);
    replacePolicy(g, { Ingress: [tcp(20, { PolicyIndex: 1, Action: "DROP" })] }, ctx);
    expect(ports(g)).toEqual(["1", "20", "3"]);
    expect(g.ingress[1]!.action).toBe("DROP");
    expect(kindOf(() => replacePolicy(g, { Ingress: [tcp(5)] }, ctx))).toBe("Empty");
    expect(kindOf(() => replacePolicy(g, { Ingress: [tcp(5, { PolicyIndex: 3 })] }, ctx))).toBe("Range");
    expect(kindOf(() => replacePolicy(g, { Ingress: [tcp(3, { PolicyIndex: 0 })] }, ctx))).toBe("DuplicatePolicy");
    expect(g.version).toBe(2);
  });
});

describe("DeleteSecurityGroupPolicies", () => {
  it("deletes by PolicyIndex (several at once)", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(1), tcp(2), tcp(3), tcp(4)] }, ctx);
    deletePolicies(g, { Ingress: [{ PolicyIndex: 3 }, { PolicyIndex: 1 }] }, ctx);
    expect(ports(g)).toEqual(["1", "3"]);
    expect(kindOf(() => deletePolicies(g, { Ingress: [{ PolicyIndex: 2 }] }, ctx))).toBe("Range");
  });

  it("deletes by content (case-insensitive, an address equal to its /32)", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(1), tcp(2, { CidrBlock: "10.0.0.5" }), tcp(3)] }, ctx);
    deletePolicies(g, { Ingress: [{ Protocol: "tcp", Port: "2", CidrBlock: "10.0.0.5/32", Action: "accept" }] }, ctx);
    expect(ports(g)).toEqual(["1", "3"]);
    expect(kindOf(() => deletePolicies(g, { Ingress: [tcp(9)] }, ctx))).toBe("GroupNotFound");
  });

  it("never by index and content together; a stale Version refuses", () => {
    const g = group();
    createPolicies(g, { Egress: [tcp(1), tcp(2)] }, ctx);
    expect(kindOf(() => deletePolicies(g, { Egress: [{ PolicyIndex: 0 }, tcp(2)] }, ctx))).toBe("Coexist");
    expect(kindOf(() => deletePolicies(g, { Egress: [tcp(2, { PolicyIndex: 1 })] }, ctx))).toBe("Coexist");
    expect(kindOf(() => deletePolicies(g, { Version: "0", Egress: [{ PolicyIndex: 0 }] }, ctx))).toBe("VersionMismatch");
    deletePolicies(g, { Version: "1", Egress: [{ PolicyIndex: 0 }] }, ctx);
    expect(ports(g, "egress")).toEqual(["2"]);
  });
});

describe("ModifySecurityGroupPolicies", () => {
  it("replaces both directions; Version 0 clears every rule", () => {
    const g = group();
    createPolicies(g, { Ingress: [tcp(1)] }, ctx);
    modifyPolicies(g, { Ingress: [tcp(5), tcp(6)], Egress: [{ Protocol: "ALL", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] }, true, ctx);
    expect(ports(g)).toEqual(["5", "6"]);
    expect(g.egress).toHaveLength(1);
    expect(g.version).toBe(2);
    modifyPolicies(g, { Version: "0", Ingress: [tcp(7)] }, true, ctx);
    expect(g.ingress).toEqual([]);
    expect(g.egress).toEqual([]);
    expect(g.version).toBe(3);
  });

  it("SortPolicys true keeps the given order; false keeps the old rules' order ahead of the new ones", () => {
    const sorted = group();
    createPolicies(sorted, { Ingress: [tcp(1), tcp(2)] }, ctx);
    modifyPolicies(sorted, { Ingress: [tcp(3), tcp(2), tcp(1)] }, true, ctx);
    expect(ports(sorted)).toEqual(["3", "2", "1"]);
    const kept = group();
    createPolicies(kept, { Ingress: [tcp(1), tcp(2)] }, ctx);
    modifyPolicies(kept, { Ingress: [tcp(3), tcp(2), tcp(1)] }, false, ctx);
    expect(ports(kept)).toEqual(["1", "2", "3"]);
  });

  it("refuses PolicyIndex, duplicates and more than 100 rules, changing nothing", () => {
    const g = group();
    expect(kindOf(() => modifyPolicies(g, { Ingress: [tcp(1, { PolicyIndex: 0 })] }, true, ctx))).toBe("BadValue");
    expect(kindOf(() => modifyPolicies(g, { Ingress: [tcp(1), tcp(1)] }, true, ctx))).toBe("DuplicatePolicy");
    expect(kindOf(() => modifyPolicies(g, { Egress: Array.from({ length: 101 }, (_v, i) => tcp(i + 1)) }, true, ctx))).toBe("PolicyQuota");
    expect(g.version).toBe(0);
  });
});
