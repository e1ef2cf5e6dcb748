import { describe, expect, it } from "vitest";
import {
  ensureMetadataRedirect,
  removeMetadataRedirect,
  renderMetadataRuleset,
} from "../../../drivers/network/metadata-redirect.js";
import { RecordingRunner } from "../../support/recording-runner.js";

const bridges = [
  { bridge: "br-vpc1", gateway: "10.1.0.1" },
  { bridge: "br-vpc2", gateway: "10.2.0.1" },
];

describe("renderMetadataRuleset()", () => {
  it("replaces its own table in one transaction, DNATs per bridge and fences the port", () => {
    expect(renderMetadataRuleset({ bridges, port: 8775 })).toBe(
      [
        "table ip cdh_metadata",
        "delete table ip cdh_metadata",
        "table ip cdh_metadata {",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        '    iifname "br-vpc1" ip daddr { 169.254.169.254, 169.254.0.23 } tcp dport 80 dnat to 10.1.0.1:8775',
        '    iifname "br-vpc2" ip daddr { 169.254.169.254, 169.254.0.23 } tcp dport 80 dnat to 10.2.0.1:8775',
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        '    iifname "br-vpc1" tcp dport 8775 ip daddr != 10.1.0.1 drop',
        '    iifname "br-vpc2" tcp dport 8775 ip daddr != 10.2.0.1 drop',
        "  }",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("refuses names and addresses that could change the script", () => {
    expect(() => renderMetadataRuleset({ bridges: [{ bridge: 'br0" accept', gateway: "10.0.0.1" }], port: 1 })).toThrow(TypeError);
    expect(() => renderMetadataRuleset({ bridges: [{ bridge: "br0", gateway: "10.0.0.1; drop" }], port: 1 })).toThrow(TypeError);
    expect(() => renderMetadataRuleset({ bridges: [], port: 0 })).toThrow(RangeError);
    expect(() => renderMetadataRuleset({ bridges: [], port: 8775, table: "x; flush ruleset" })).toThrow(TypeError);
    expect(() => renderMetadataRuleset({ bridges: [bridges[0]!, bridges[0]!], port: 8775 })).toThrow(/twice/);
  });
});

describe("ensureMetadataRedirect()", () => {
  it("adds the metadata addresses to each bridge, then loads the table through nft -f - on stdin", async () => {
    const runner = new RecordingRunner().on(() => true, {});
    await ensureMetadataRedirect({ runner, bridges, port: 8775 });
    expect(runner.commands).toEqual([
      ["ip", "-4", "addr", "replace", "169.254.169.254/32", "dev", "br-vpc1", "scope", "link"],
      ["ip", "-4", "addr", "replace", "169.254.0.23/32", "dev", "br-vpc1", "scope", "link"],
      ["ip", "-4", "addr", "replace", "169.254.169.254/32", "dev", "br-vpc2", "scope", "link"],
      ["ip", "-4", "addr", "replace", "169.254.0.23/32", "dev", "br-vpc2", "scope", "link"],
      ["nft", "-f", "-"],
    ]);
    expect(runner.runs.at(-1)!.options!.input).toBe(renderMetadataRuleset({ bridges, port: 8775 }));
  });

  it("touches no bridge with answerArp off", async () => {
    const runner = new RecordingRunner().on(() => true, {});
    await ensureMetadataRedirect({ runner, bridges, port: 8775, answerArp: false });
    expect(runner.commands).toEqual([["nft", "-f", "-"]]);
  });
});

describe("removeMetadataRedirect()", () => {
  it("deletes only its own table (also when it is gone) and the bridges' metadata addresses", async () => {
    const runner = new RecordingRunner().on(() => true, {});
    await removeMetadataRedirect({ runner, bridges: [{ bridge: "br-vpc1" }] });
    expect(runner.commands).toEqual([
      ["nft", "-f", "-"],
      ["ip", "-4", "addr", "del", "169.254.169.254/32", "dev", "br-vpc1"],
      ["ip", "-4", "addr", "del", "169.254.0.23/32", "dev", "br-vpc1"],
    ]);
    expect(runner.runs[0]!.options!.input).toBe("table ip cdh_metadata\ndelete table ip cdh_metadata\n");
    expect(runner.runs[1]!.options!.allowFailure).toBe(true);
  });
});
