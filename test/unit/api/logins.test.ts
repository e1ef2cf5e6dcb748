import { describe, expect, it } from "vitest";
import { parse, refusal } from "../../support/parse.js";
import { ACTIONS } from "../../../agent/api/commands.js";


const KEY = "skey-abcd1234";
const KEY2 = "skey-efgh5678";
const INS = "ins-abcd1234";
const RSA_LINE = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 user@laptop";
const manyKeys = (n: number) => Array.from({ length: n }, (_, i) => `skey-${String(i).padStart(8, "0")}`);
const manyInstances = (n: number) => Array.from({ length: n }, (_, i) => `ins-${String(i).padStart(8, "0")}`);

describe("the key pair and login actions", () => {
  it("are all known to parseCommand", () => {
    for (const action of [
      "ImportKeyPair",
      "CreateKeyPair",
      "DescribeKeyPairs",
      "DeleteKeyPairs",
      "AssociateInstancesKeyPairs",
      "DisassociateInstancesKeyPairs",
      "ResetInstancesPassword",
    ]) {
      expect(ACTIONS).toContain(action);
    }
  });
});

describe("ImportKeyPair parsing", () => {
  it("types a request and accepts (and drops) TagSpecification", () => {
    expect(parse("ImportKeyPair", { KeyName: "my_key_1", ProjectId: 0, PublicKey: RSA_LINE, TagSpecification: [{ ResourceType: "keypair" }] })).toEqual({
      keyName: "my_key_1",
      projectId: 0,
      publicKey: RSA_LINE,
    });
  });

  it("requires KeyName, ProjectId and PublicKey, naming the missing one", () => {
    expect(refusal("ImportKeyPair", { ProjectId: 0, PublicKey: RSA_LINE })).toEqual({ code: "MissingParameter", message: "missing parameter `KeyName`" });
    expect(refusal("ImportKeyPair", { KeyName: "k", PublicKey: RSA_LINE })).toEqual({ code: "MissingParameter", message: "missing parameter `ProjectId`" });
    expect(refusal("ImportKeyPair", { KeyName: "k", ProjectId: 0 })).toEqual({ code: "MissingParameter", message: "missing parameter `PublicKey`" });
  });

  it("applies the KeyName rules with the seed's codes", () => {
    const body = (KeyName: string) => ({ KeyName, ProjectId: 0, PublicKey: RSA_LINE });
    expect(refusal("ImportKeyPair", body(""))).toEqual({ code: "InvalidKeyPairNameEmpty", message: "`KeyName` must not be empty" });
    expect(refusal("ImportKeyPair", body("a".repeat(26))).code).toBe("InvalidKeyPairNameTooLong");
    expect(parse("ImportKeyPair", body("a".repeat(25)))).toMatchObject({ keyName: "a".repeat(25) });
    const illegal = refusal("ImportKeyPair", body("my-key"));
    expect(illegal.code).toBe("InvalidKeyPairNameIncludeIllegalChar");
    expect(illegal.message).toContain("`KeyName`");
  });

  it("refuses unknown fields and wrong JSON types, naming the field", () => {
    expect(refusal("ImportKeyPair", { KeyName: "k", ProjectId: 0, PublicKey: RSA_LINE, Description: "x" })).toEqual({
      code: "InvalidParameter",
      message: "unknown parameter `Description`",
    });
    expect(refusal("ImportKeyPair", { KeyName: "k", ProjectId: "0", PublicKey: RSA_LINE })).toEqual({
      code: "InvalidParameter",
      message: "`ProjectId` must be a number, got string",
    });
    expect(refusal("ImportKeyPair", { KeyName: "k", ProjectId: 0.5, PublicKey: RSA_LINE }).message).toContain("`ProjectId` must be an integer");
    expect(refusal("ImportKeyPair", { KeyName: 7, ProjectId: 0, PublicKey: RSA_LINE }).message).toBe("`KeyName` must be a string, got number");
  });
});

describe("CreateKeyPair parsing", () => {
  it("types a request", () => {
    expect(parse("CreateKeyPair", { KeyName: "web", ProjectId: 0 })).toEqual({ keyName: "web", projectId: 0 });
    expect(parse("CreateKeyPair", { KeyName: "web", ProjectId: 0, TagSpecification: [] })).toEqual({ keyName: "web", projectId: 0 });
  });

  it("refuses a PublicKey (that is ImportKeyPair's) and a missing ProjectId", () => {
    expect(refusal("CreateKeyPair", { KeyName: "web", ProjectId: 0, PublicKey: RSA_LINE })).toEqual({
      code: "InvalidParameter",
      message: "unknown parameter `PublicKey`",
    });
    expect(refusal("CreateKeyPair", { KeyName: "web" }).code).toBe("MissingParameter");
  });
});

describe("DescribeKeyPairs parsing", () => {
  it("defaults Offset 0, Limit 20 and no filters", () => {
    expect(parse("DescribeKeyPairs", {})).toEqual({ offset: 0, limit: 20, filters: [] });
  });

  it("dedupes KeyIds and checks their format with InvalidKeyPairId.Malformed", () => {
    expect(parse("DescribeKeyPairs", { KeyIds: [KEY, KEY, KEY2] })).toMatchObject({ keyIds: [KEY, KEY2] });
    const r = refusal("DescribeKeyPairs", { KeyIds: ["skey-1122"] });
    expect(r.code).toBe("InvalidKeyPairId.Malformed");
    expect(r.message).toContain("`KeyIds.0`");
  });

  it("types key-name filters and refuses unknown filter names with InvalidFilter", () => {
    expect(parse("DescribeKeyPairs", { Filters: [{ Name: "key-name", Values: ["web"] }] })).toMatchObject({
      filters: [{ name: "key-name", values: ["web"] }],
    });
    const r = refusal("DescribeKeyPairs", { Filters: [{ Name: "zone", Values: ["x"] }] });
    expect(r.code).toBe("InvalidFilter");
    expect(r.message).toContain("`Filters.0.Name`");
  });

  it("refuses KeyIds together with Filters", () => {
    expect(refusal("DescribeKeyPairs", { KeyIds: [KEY], Filters: [{ Name: "key-name", Values: ["web"] }] }).code).toBe(
      "InvalidParameterCombination",
    );
  });

  it("limits Limit to 1..100 and more than 100 KeyIds", () => {
    expect(parse("DescribeKeyPairs", { Offset: 5, Limit: 100 })).toMatchObject({ offset: 5, limit: 100 });
    expect(refusal("DescribeKeyPairs", { Limit: 101 })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refusal("DescribeKeyPairs", { Limit: 101 }).message).toContain("`Limit`");
    expect(refusal("DescribeKeyPairs", { KeyIds: manyKeys(101) }).code).toBe("InvalidParameterValue.LimitExceeded");
  });
});

describe("DeleteKeyPairs parsing", () => {
  it("requires 1..100 well-formed KeyIds", () => {
    expect(parse("DeleteKeyPairs", { KeyIds: [KEY, KEY] })).toEqual({ keyIds: [KEY] });
    expect(refusal("DeleteKeyPairs", {})).toEqual({ code: "MissingParameter", message: "missing parameter `KeyIds`" });
    expect(refusal("DeleteKeyPairs", { KeyIds: [] }).code).toBe("InvalidParameterValue");
    expect(refusal("DeleteKeyPairs", { KeyIds: manyKeys(101) }).code).toBe("InvalidParameterValue.LimitExceeded");
    expect(refusal("DeleteKeyPairs", { KeyIds: ["skey-ABCD1234"] }).code).toBe("InvalidKeyPairId.Malformed");
  });
});

describe.each(["AssociateInstancesKeyPairs", "DisassociateInstancesKeyPairs"])("%s parsing", (action) => {
  it("types a request; ForceStop defaults to false", () => {
    expect(parse(action, { InstanceIds: [INS, INS], KeyIds: [KEY] })).toEqual({ instanceIds: [INS], keyIds: [KEY], forceStop: false });
    expect(parse(action, { InstanceIds: [INS], KeyIds: [KEY, KEY2], ForceStop: true })).toEqual({
      instanceIds: [INS],
      keyIds: [KEY, KEY2],
      forceStop: true,
    });
  });

  it("requires both lists and checks their IDs with the Malformed codes", () => {
    expect(refusal(action, { KeyIds: [KEY] })).toEqual({ code: "MissingParameter", message: "missing parameter `InstanceIds`" });
    expect(refusal(action, { InstanceIds: [INS] })).toEqual({ code: "MissingParameter", message: "missing parameter `KeyIds`" });
    expect(refusal(action, { InstanceIds: ["ins-1122"], KeyIds: [KEY] })).toMatchObject({ code: "InvalidInstanceId.Malformed" });
    expect(refusal(action, { InstanceIds: [INS], KeyIds: [KEY, "skey-1122"] }).message).toContain("`KeyIds.1`");
    expect(refusal(action, { InstanceIds: [INS], KeyIds: [KEY, "skey-1122"] }).code).toBe("InvalidKeyPairId.Malformed");
  });

  it("allows at most 100 instances and 100 keys", () => {
    expect(parse(action, { InstanceIds: manyInstances(100), KeyIds: manyKeys(100) })).toMatchObject({ forceStop: false });
    expect(refusal(action, { InstanceIds: manyInstances(101), KeyIds: [KEY] }).code).toBe("InvalidParameterValue.LimitExceeded");
    expect(refusal(action, { InstanceIds: [INS], KeyIds: manyKeys(101) }).code).toBe("InvalidParameterValue.LimitExceeded");
  });

  it("refuses unknown fields and a ForceStop that is not a boolean", () => {
    expect(refusal(action, { InstanceIds: [INS], KeyIds: [KEY], StopType: "HARD" })).toEqual({
      code: "InvalidParameter",
      message: "unknown parameter `StopType`",
    });
    expect(refusal(action, { InstanceIds: [INS], KeyIds: [KEY], ForceStop: "TRUE" }).message).toBe("`ForceStop` must be a boolean, got string");
  });
});

describe("ResetInstancesPassword parsing", () => {
  it("types a request; the password's complexity is not judged here", () => {
    expect(parse("ResetInstancesPassword", { InstanceIds: [INS], Password: "x" })).toEqual({ instanceIds: [INS], password: "x", forceStop: false });
    expect(parse("ResetInstancesPassword", { InstanceIds: [INS], Password: "Abcdef12", UserName: "root", ForceStop: true })).toEqual({
      instanceIds: [INS],
      password: "Abcdef12",
      userName: "root",
      forceStop: true,
    });
  });

  it("requires InstanceIds and Password", () => {
    expect(refusal("ResetInstancesPassword", { InstanceIds: [INS] })).toEqual({ code: "MissingParameter", message: "missing parameter `Password`" });
    expect(refusal("ResetInstancesPassword", { Password: "Abcdef12" }).message).toBe("missing parameter `InstanceIds`");
  });

  it("limits UserName to 64 characters and InstanceIds to 100", () => {
    expect(refusal("ResetInstancesPassword", { InstanceIds: [INS], Password: "Abcdef12", UserName: "u".repeat(65) })).toMatchObject({
      code: "InvalidParameterValue.TooLong",
    });
    expect(refusal("ResetInstancesPassword", { InstanceIds: [INS], Password: "Abcdef12", UserName: "" }).message).toContain("`UserName`");
    expect(refusal("ResetInstancesPassword", { InstanceIds: manyInstances(101), Password: "Abcdef12" }).code).toBe(
      "InvalidParameterValue.LimitExceeded",
    );
  });

  it("refuses unknown fields and a Password that is not a string", () => {
    expect(refusal("ResetInstancesPassword", { InstanceIds: [INS], Password: "Abcdef12", KeyIds: [KEY] })).toEqual({
      code: "InvalidParameter",
      message: "unknown parameter `KeyIds`",
    });
    expect(refusal("ResetInstancesPassword", { InstanceIds: [INS], Password: 12345678 }).message).toBe("`Password` must be a string, got number");
  });
});
