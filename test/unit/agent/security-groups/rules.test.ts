import { describe, expect, it } from "vitest";
import { SgError } from "../../../../agent/network/security-groups/errors.js";
import { canonicalCidr, normalizePort, parsePolicy, policyKey, toSgRule, type PolicyInput } from "../../../../agent/network/security-groups/rules.js";

const T = "2026-12-07 10:00:00";
const parse = (input: PolicyInput) => parsePolicy(input, "SecurityGroupPolicySet.Ingress.0", T);

function refusal(input: PolicyInput): SgError {
  try {
    parse(input);
  } catch (error) {
    if (error instanceof SgError) return error;
    throw error;
  }
  throw new Error("the rule was accepted");
}

describe("parsePolicy", () => {
  it("takes Protocol and Action in any case and stores them upper-cased", () => {
    const p = parse({ Protocol: "tcp", Port: "22", CidrBlock: "10.0.0.0/8", Action: "accept" });
    expect(p).toEqual({ protocol: "TCP", port: "22", cidrBlock: "10.0.0.0/8", action: "ACCEPT", description: "", modifyTime: T });
    expect(parse({ Protocol: "All", CidrBlock: "0.0.0.0/0", Action: "Drop" }).action).toBe("DROP");
    expect(parse({ Protocol: "icmp", Port: "all", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).port).toBe("ALL");
  });

  it("takes the four port forms with TCP and UDP and normalizes them", () => {
    expect(parse({ Protocol: "UDP", Port: "ALL", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).port).toBe("ALL");
    expect(parse({ Protocol: "TCP", Port: "8000-8010", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).port).toBe("8000-8010");
    expect(parse({ Protocol: "TCP", Port: "80, 443", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).port).toBe("80,443");
    expect(parse({ Protocol: "TCP", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).port).toBe("ALL");
  });

  it("refuses a port with a protocol that has none, and bad ports, naming the field", () => {
    const e = refusal({ Protocol: "ICMP", Port: "80", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" });
    expect(e.kind).toBe("BadValue");
    expect(e.message).toContain("`SecurityGroupPolicySet.Ingress.0.Port`");
    expect(refusal({ Protocol: "ALL", Port: "22", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).kind).toBe("BadValue");
    for (const port of ["0", "65536", "90-80", "80;443", "http", "1-2-3"]) {
      expect(refusal({ Protocol: "TCP", Port: port, CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).message).toContain(".Port`");
    }
  });

  it("wants exactly one peer", () => {
    expect(refusal({ Protocol: "TCP", Action: "ACCEPT" }).kind).toBe("Empty");
    expect(refusal({ Protocol: "TCP", CidrBlock: "10.0.0.0/8", SecurityGroupId: "sg-abcdefgh", Action: "ACCEPT" }).kind).toBe("Coexist");
    expect(parse({ Protocol: "TCP", SecurityGroupId: "sg-abcdefgh", Action: "ACCEPT" }).securityGroupId).toBe("sg-abcdefgh");
    expect(refusal({ Protocol: "TCP", SecurityGroupId: "sg-ABC", Action: "ACCEPT" }).kind).toBe("GroupIdMalformed");
  });

  it("refuses what this host cannot enforce, naming the field", () => {
    const cases: Array<[PolicyInput, string]> = [
      [{ Protocol: "TCP", Ipv6CidrBlock: "::/0", Action: "ACCEPT" }, "Ipv6CidrBlock"],
      [{ Protocol: "TCP", AddressTemplate: { AddressId: "ipm-12345678" }, Action: "ACCEPT" }, "AddressTemplate"],
      [{ ServiceTemplate: { ServiceId: "ppm-12345678" }, CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }, "ServiceTemplate"],
      [{ Protocol: "TCP", CidrBlock: "MY_PUBLIC_IP", Action: "ACCEPT" }, "CidrBlock"],
      [{ Protocol: "ICMPv6", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }, "Protocol"],
      [{ Protocol: "TCP", CidrBlock: "0.0.0.0/0", Action: "ACCEPT", Priority: 1 }, "Priority"],
    ];
    for (const [input, field] of cases) {
      const e = refusal(input);
      expect(e.kind).toBe("BadValue");
      expect(e.message).toContain(`.${field}\``);
    }
  });

  it("reads empty members and empty templates (as Describe shows them) as absent", () => {
    const p = parse({
      Protocol: "TCP",
      Port: "22",
      CidrBlock: "10.1.0.0/16",
      Ipv6CidrBlock: "",
      SecurityGroupId: "",
      AddressTemplate: { AddressId: "", AddressGroupId: "" },
      ServiceTemplate: { ServiceId: "", ServiceGroupId: "" },
      Action: "ACCEPT",
      ModifyTime: "2020-01-01 00:00:00",
    });
    expect(p.cidrBlock).toBe("10.1.0.0/16");
    expect(p.modifyTime).toBe(T);
  });

  it("stores any 0.0.0.0/n as 0.0.0.0/0 and refuses what is not IPv4", () => {
    expect(parse({ Protocol: "ALL", CidrBlock: "0.0.0.0/8", Action: "ACCEPT" }).cidrBlock).toBe("0.0.0.0/0");
    expect(refusal({ Protocol: "ALL", CidrBlock: "10.0.0.0/33", Action: "ACCEPT" }).kind).toBe("BadValue");
    expect(refusal({ Protocol: "ALL", CidrBlock: "300.0.0.1", Action: "ACCEPT" }).kind).toBe("BadValue");
  });

  it("wants an action that is ACCEPT or DROP, and a protocol it knows", () => {
    expect(refusal({ Protocol: "TCP", CidrBlock: "0.0.0.0/0" }).kind).toBe("Empty");
    expect(refusal({ Protocol: "TCP", CidrBlock: "0.0.0.0/0", Action: "REJECT" }).kind).toBe("BadValue");
    expect(refusal({ Protocol: "SCTP", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).kind).toBe("BadValue");
    expect(refusal({ CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }).kind).toBe("Empty");
  });
});

describe("rule identity and compilation", () => {
  it("an address and its /32 are the same rule; the description does not count", () => {
    const a = parse({ Protocol: "TCP", Port: "22", CidrBlock: "10.0.0.5", Action: "ACCEPT", PolicyDescription: "a" });
    const b = parse({ Protocol: "tcp", Port: "22", CidrBlock: "10.0.0.5/32", Action: "accept" });
    expect(policyKey(a)).toBe(policyKey(b));
  });

  it("compiles ports and peers into the firewall's form, CIDRs as network addresses", () => {
    expect(toSgRule(parse({ Protocol: "TCP", Port: "80,443", CidrBlock: "10.0.0.5/24", Action: "ACCEPT" }))).toEqual({
      action: "ACCEPT",
      protocol: "TCP",
      ports: [80, 443],
      peer: { cidr: "10.0.0.0/24" },
    });
    expect(toSgRule(parse({ Protocol: "UDP", Port: "8000-8010", SecurityGroupId: "sg-abcdefgh", Action: "DROP" }))).toEqual({
      action: "DROP",
      protocol: "UDP",
      ports: [[8000, 8010]],
      peer: { securityGroupId: "sg-abcdefgh" },
    });
    expect(toSgRule(parse({ Protocol: "ICMP", CidrBlock: "10.0.0.9", Action: "ACCEPT" })).peer).toEqual({ cidr: "10.0.0.9/32" });
  });

  it("canonicalCidr and normalizePort", () => {
    expect(canonicalCidr("192.168.1.77/16")).toBe("192.168.0.0/16");
    expect(canonicalCidr("nope")).toBeUndefined();
    expect(normalizePort("443-443")).toEqual({ port: "443" });
    expect(normalizePort("80,80,81")).toEqual({ port: "80,81" });
  });
});
