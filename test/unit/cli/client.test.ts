/**
 * The command line's API client against the agent's real API edge in-process (its TC3
 * verifier, its envelope): signed calls pass, a wrong key comes back as the API's error code,
 * a closed port and a server that is not the API are "unreachable", and over TLS the
 * client trusts exactly the certificate in api_tls_cert (pinned), whatever CA signed it.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createApiServer, type ApiLogger, type ApiServer } from "../../../agent/api/server.js";
import { AgentUnreachableError, ApiCallError, connectHost, createApiClient } from "../../../agent/cli/client.js";
import { freePort } from "../../support/agent-process.js";
import { makeCertificates } from "../../support/tls.js";

const SECRET_ID = "AKIDclitest0001";
const SECRET_KEY = "cli-test-secret-key-0001";
const quiet: ApiLogger = { child: () => quiet, info: () => {}, warn: () => {}, error: () => {} };
let api: ApiServer | undefined;
let dir = "";
const seen: Array<{ action: string; secretId: string }> = [];

async function start(tls?: { certFile: string; keyFile: string }): Promise<number> {
  api = createApiServer({
    listen: { host: "127.0.0.1", port: 0 },
    credentials: [{ secretId: SECRET_ID, secretKey: SECRET_KEY }],
    dispatch: async (command, ctx) => {
      seen.push({ action: command.action, secretId: ctx.secretId });
      return { TotalCount: 0, InstanceSet: [] };
    },
    logger: quiet,
    ...(tls ? { tls } : {}),
  });
  return (await api.listen()).port;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cdh-cli-unit-"));
  await makeCertificates(dir);
}, 60_000);
afterEach(async () => {
  await api?.close();
  api = undefined;
  seen.length = 0;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("createApiClient", () => {
  it("signs requests the agent's verifier accepts, and gives back the Response", async () => {
    const port = await start();
    const client = createApiClient({ host: "0.0.0.0", port, secretId: SECRET_ID, secretKey: SECRET_KEY });
    const r = await client.call("DescribeInstances", { Limit: 5 });
    expect(r.TotalCount).toBe(0);
    expect(typeof r.RequestId).toBe("string");
    expect(seen).toEqual([{ action: "DescribeInstances", secretId: SECRET_ID }]);
    expect(client.endpoint).toBe(`http://127.0.0.1:${port}`);
  });

  it("turns the API's error into ApiCallError with the Code and Message as they came", async () => {
    const port = await start();
    const client = createApiClient({ host: "127.0.0.1", port, secretId: SECRET_ID, secretKey: "wrong" });
    const error = await client.call("DescribeInstances").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiCallError);
    expect((error as ApiCallError).code).toBe("AuthFailure.SignatureFailure");
    expect((error as ApiCallError).apiMessage).toMatch(/signature does not match/);
    expect((error as ApiCallError).requestId).toMatch(/./);
    const bad = createApiClient({ host: "127.0.0.1", port, secretId: SECRET_ID, secretKey: SECRET_KEY });
    const invalid = await bad.call("DescribeInstances", { Limit: 1000 }).catch((e: unknown) => e);
    expect((invalid as ApiCallError).code).toMatch(/^InvalidParameterValue/);
    expect(seen).toEqual([]);
  });

  it("says the agent is unreachable when nothing listens or something else answers", async () => {
    const port = await freePort();
    const client = createApiClient({ host: "127.0.0.1", port, secretId: SECRET_ID, secretKey: SECRET_KEY });
    await expect(client.call("DescribeInstances")).rejects.toThrow(AgentUnreachableError);
    const other = createServer((_req, res) => res.end("<html>not the API</html>"));
    await new Promise<void>((r) => other.listen(port, "127.0.0.1", r));
    try {
      await expect(client.call("DescribeInstances")).rejects.toThrow(/not JSON/);
    } finally {
      await new Promise((r) => other.close(r));
    }
  });

  it("over TLS trusts the pinned certificate and refuses another one the same CA signed", async () => {
    const port = await start({ certFile: join(dir, "server1.crt"), keyFile: join(dir, "server1.key") });
    const pinned = createApiClient({ host: "127.0.0.1", port, secretId: SECRET_ID, secretKey: SECRET_KEY, pinnedCertPem: await readFile(join(dir, "server1.crt"), "utf8") });
    expect((await pinned.call("DescribeInstances")).TotalCount).toBe(0);
    expect(pinned.endpoint).toBe(`https://127.0.0.1:${port}`);
    const other = createApiClient({ host: "127.0.0.1", port, secretId: SECRET_ID, secretKey: SECRET_KEY, pinnedCertPem: await readFile(join(dir, "server2.crt"), "utf8") });
    await expect(other.call("DescribeInstances")).rejects.toThrow(/not the one in the agent's api_tls_cert/);
    expect(seen).toHaveLength(1); // the refused connection sent no request the agent served
  });

  it("reaches wildcard listen addresses on loopback", () => {
    expect(connectHost("0.0.0.0")).toBe("127.0.0.1");
    expect(connectHost("::")).toBe("::1");
    expect(connectHost("[::1]")).toBe("::1");
    expect(connectHost("10.1.2.3")).toBe("10.1.2.3");
  });
});
