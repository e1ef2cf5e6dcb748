/**
 * The official Monitor client (the all-in-one `tencentcloud-sdk-nodejs`'s
 * monitor.v20180724.Client, X-TC-Version 2018-07-24), pointed at an agent: the Monitor
 * actions share the CVM endpoint. `keepAlive`: one kept-alive connection (the SDK's own
 * httpProfile.agent option), as a controller polling a host would hold it.
 */
import { Agent as HttpAgent } from "node:http";
import { createRequire } from "node:module";
import type * as TencentCloudAll from "tencentcloud-sdk-nodejs";
import { SECRET_ID, SECRET_KEY } from "./agent-process.js";

export type MonitorClient = InstanceType<typeof TencentCloudAll.monitor.v20180724.Client>;

export function monitorClient(port: number, o: { secretId?: string; secretKey?: string; keepAlive?: boolean } = {}): MonitorClient {
  const all = createRequire(import.meta.url)("tencentcloud-sdk-nodejs") as typeof TencentCloudAll;
  return new all.monitor.v20180724.Client({
    credential: { secretId: o.secretId ?? SECRET_ID, secretKey: o.secretKey ?? SECRET_KEY },
    region: "ap-guangzhou",
    profile: {
      httpProfile: {
        endpoint: `127.0.0.1:${port}`,
        protocol: "http://",
        reqTimeout: 30,
        ...(o.keepAlive ? { agent: new HttpAgent({ keepAlive: true, maxSockets: 1 }) } : {}),
      },
    },
  });
}
