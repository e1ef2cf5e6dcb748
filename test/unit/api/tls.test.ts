/**
 * The API server over TLS in-process, with the official SDK as the client: HTTPS,
 * mutual TLS (no certificate, or one another CA signed, refused at the handshake), and
 * reloadTls() swapping the certificate without dropping an open keep-alive connection.
 * Certificates are made with the openssl CLI. (test/integration/api-tls.test.ts does
 * the same against the agent process, with SIGHUP and the config refusals.)
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { Agent } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createApiServer, type ApiLogger, type ApiServer } from "../../../agent/api/server.js";
import { isLoopbackHost, loadTlsContext, TlsFileError } from "../../../agent/api/tls.js";
import { describeOn, fingerprint, makeCertificates, openTls } from "../../support/tls.js";

const SECRET_ID = "AKIDtestagent0001";
const SECRET_KEY = "test-secret-key-0001";
const CREDENTIAL = { secretId: SECRET_ID, secretKey: SECRET_KEY };
let dir = "";
let api: ApiServer | undefined;
const file = (name: string) => join(dir, name);
const pem = (name: string) => readFile(file(name));

const quiet: ApiLogger = { child: () => quiet, info: () => {}, warn: () => {}, error: () => {} };

async function start(mutual: boolean): Promise<number> {
  api = createApiServer({
    listen: { host: "127.0.0.1", port: 0 },
    credentials: [{ secretId: SECRET_ID, secretKey: SECRET_KEY }],
    dispatch: async () => ({ TotalCount: 0, InstanceSet: [] }),
    logger: quiet,
    tls: { certFile: file("api.crt"), keyFile: file("api.key"), ...(mutual ? { clientCaFile: file("ca.crt") } : {}) },
  });
  return (await api.listen()).port;
}

function sdk(port: number, agentOptions: ConstructorParameters<typeof Agent>[0]) {
  return new tencentcloud.cvm.v20170312.Client({
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "https://", reqTimeout: 10, agent: new Agent(agentOptions) } },
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cdh-tls-unit-"));
  await makeCertificates(dir);
  await copyFile(file("server1.crt"), file("api.crt"));
  await copyFile(file("server1.key"), file("api.key"));
}, 60_000);

afterEach(async () => {
  await api?.close();
  api = undefined;
  await copyFile(file("server1.crt"), file("api.crt"));
  await copyFile(file("server1.key"), file("api.key"));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("the API over TLS", () => {
  it("serves the official SDK over https; a client that does not trust the CA refuses the server", async () => {
    const port = await start(false);
    const r = await sdk(port, { ca: await pem("ca.crt") }).DescribeInstances({});
    expect(r.TotalCount).toBe(0);
    await expect(sdk(port, {}).DescribeInstances({})).rejects.toThrow();
  });

  it("with a client CA, serves a client whose certificate it signed and refuses one without, or from another CA", async () => {
    const port = await start(true);
    const ca = await pem("ca.crt");
    expect((await sdk(port, { ca, cert: await pem("client.crt"), key: await pem("client.key") }).DescribeInstances({})).TotalCount).toBe(0);
    for (const who of [{}, { cert: await pem("stranger.crt"), key: await pem("stranger.key") }]) {
      const outcome = await sdk(port, { ca, ...who }).DescribeInstances({}).then(
        () => "answered",
        (e: Error & { requestId?: string }) => e,
      );
      expect(outcome).not.toBe("answered");
      // A TLS refusal, not a CVM answer: no RequestId, no code.
      expect((outcome as { requestId?: string }).requestId || undefined).toBeUndefined();
      expect((outcome as { code?: string }).code).toBeUndefined();
      expect(String((outcome as Error).message)).toMatch(/certificate|alert|socket hang up|ECONNRESET/i);
    }
  });

  it("reloadTls() gives new connections the new certificate and keeps an open keep-alive connection", async () => {
    const port = await start(true);
    const client = { ca: await pem("ca.crt"), cert: await pem("client.crt"), key: await pem("client.key") };
    const open = await openTls(port, client);
    expect((await describeOn(open, port, CREDENTIAL)).Response.TotalCount).toBe(0);
    expect(open.getPeerCertificate().fingerprint256.toUpperCase()).toBe(await fingerprint(file("server1.crt")));
    await copyFile(file("server2.crt"), file("api.crt"));
    await copyFile(file("server2.key"), file("api.key"));
    expect(api!.reloadTls()).toBe(true);
    const fresh = await openTls(port, client);
    expect(fresh.getPeerCertificate().fingerprint256.toUpperCase()).toBe(await fingerprint(file("server2.crt")));
    fresh.destroy();
    expect((await describeOn(open, port, CREDENTIAL)).Response.TotalCount).toBe(0);
    open.destroy();
  });

  it("keeps the old certificate when the new files cannot be used, and names the file", async () => {
    const port = await start(false);
    await writeFile(file("api.crt"), "not a certificate");
    expect(() => api!.reloadTls()).toThrow(TlsFileError);
    expect(() => api!.reloadTls()).toThrow(/api_tls_cert/);
    const s = await openTls(port, { ca: await pem("ca.crt") });
    expect(s.getPeerCertificate().fingerprint256.toUpperCase()).toBe(await fingerprint(file("server1.crt")));
    s.destroy();
  });

  it("refuses unreadable files at start, naming the key and the file", () => {
    expect(() => loadTlsContext({ certFile: file("missing.crt"), keyFile: file("api.key") })).toThrow(/api_tls_cert .*missing\.crt/);
    expect(() => loadTlsContext({ certFile: file("server1.crt"), keyFile: file("server2.key") })).toThrow(TlsFileError);
  });

  it("knows loopback hosts", () => {
    expect(["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"].map(isLoopbackHost)).toEqual([true, true, true, true, true]);
    expect(["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "localhost.example", "127.0.0.1.example"].map(isLoopbackHost)).toEqual(Array(6).fill(false));
  });
});
