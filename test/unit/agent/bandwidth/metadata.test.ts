import { describe, expect, it } from "vitest";
import { buildSite } from "../../../../agent/metadata/tree.js";
import { guestConfigOf } from "../../../../agent/instances/guest.js";
import { SEED_INTRANET_RULE } from "../../../../agent/network/bandwidth/rule.js";
import type { InstanceRecord } from "../../../../agent/model.js";
import { guestConfig, guestDocuments } from "../../metadata/fixture.js";

const text = (site: ReturnType<typeof buildSite>, path: string) => site.get(path)?.body.toString("utf8");

describe("the intranet caps in the metadata", () => {
  it("are served at the seed's instance/bandwidth-limit-egress and -ingress, in Kbit/s, in every Tencent version", () => {
    const cfg = guestConfig({ bandwidthLimitKbit: { egress: 1_500_000, ingress: 1_500_000 } });
    const site = buildSite(cfg, guestDocuments(cfg));
    for (const root of ["/latest/meta-data", "/2017-09-19/meta-data", "/meta-data"]) {
      expect(text(site, `${root}/instance/bandwidth-limit-egress`)).toBe("1500000");
      expect(text(site, `${root}/instance/bandwidth-limit-ingress`)).toBe("1500000");
      expect(text(site, `${root}/instance/`)!.split("\n")).toEqual(expect.arrayContaining(["bandwidth-limit-egress", "bandwidth-limit-ingress"]));
    }
  });

  it("are absent where the host enforces none", () => {
    const cfg = guestConfig();
    const site = buildSite(cfg, guestDocuments(cfg));
    expect(site.get("/latest/meta-data/instance/bandwidth-limit-egress")).toBeUndefined();
  });

  it("follow the instance's size through the host's rule", () => {
    const record = {
      instanceId: "ins-abcd1234",
      uuid: "u",
      instanceName: "n",
      instanceType: "CDH_16C32G",
      imageId: "img-abcd1234",
      launchIndex: 0,
      createdTime: "2026-01-01T00:00:00Z",
      cpu: 16,
      nics: [],
    } as unknown as InstanceRecord;
    const host = { subnets: [], hostId: "host-abcd1234", zone: "z", region: "r", ntpServers: [] };
    expect(guestConfigOf({ record, host: { ...host, intranetRule: SEED_INTRANET_RULE }, keys: [] }).bandwidthLimitKbit).toEqual({ egress: 3_000_000, ingress: 3_000_000 });
    expect(guestConfigOf({ record, host, keys: [] }).bandwidthLimitKbit).toBeUndefined();
  });
});
