import { request } from "node:http";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Command } from "../../../agent/api/commands.js";
import { createApiServer, type ApiServer, type DispatchContext } from "../../../agent/api/server.js";
import { signTc3 } from "../../../agent/api/tc3.js";
import { ApiError } from "../../../agent/errors.js";
import { addSecret, REDACTED, secrets } from "../../../drivers/exec/sanitize.js";
import { recordingLogger, type LogLine } from "../../support/log-capture.js";

const SECRET_ID = "AKIDtestagent0001";
const SECRET_KEY = "test-secret-key-0001";


let api: ApiServer;
let port: number;
let calls: Array<{ command: Command; context: DispatchContext }>;
let logs: LogLine[];
let reply: (command: Command) => Promise<Record<string, unknown>>;

beforeEach(async () => {
  calls = [];
  logs = [];
  reply = async (command) => ({ Echo: command.action });
  api = createApiServer({
    listen: { host: "127.0.0.1", port: 0 },
    credentials: [{ secretId: SECRET_ID, secretKey: SECRET_KEY }],
    dispatch: async (command, context) => {
      calls.push({ command, context });
      return reply(command);
    },
    logger: recordingLogger(logs),
  });
  port = (await api.listen()).port;
});

afterEach(async () => {
  await api.close();
});

function sdkClient(secretKey = SECRET_KEY, secretId = SECRET_ID) {
  return new tencentcloud.cvm.v20170312.Client({
    credential: { secretId, secretKey },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://" } },
  });
}

async function sdkError(promise: Promise<unknown>): Promise<{ code?: string; message: string; requestId?: string }> {
  try {
    await promise;
  } catch (e) {
    const err = e as { code?: string; message: string; requestId?: string };
    return { code: err.code, message: err.message, requestId: err.requestId };
  }
  throw new Error("the call succeeded");
}

interface RawOptions {
  method?: string;
  path?: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  timestamp?: number;
  sign?: boolean;
}

/** A hand-made request, signed like the SDK unless told otherwise. */
function raw(options: RawOptions = {}): Promise<{ status: number; json: { Response: Record<string, unknown> } }> {
  const body = options.body ?? "{}";
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    "X-TC-Action": "DescribeInstances",
    "X-TC-Version": "2017-03-12",
    "X-TC-Timestamp": String(timestamp),
    ...options.headers,
  };
  if (options.sign !== false) {
    headers["Authorization"] = signTc3({
      secretId: SECRET_ID,
      secretKey: SECRET_KEY,
      service: "127",
      host: "127.0.0.1",
      timestamp,
      payload: body,
      contentType: headers["Content-Type"] ?? "",
    });
  }
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: options.method ?? "POST", path: options.path ?? "/", headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }));
    });
    req.on("error", reject);
    req.end(options.method === "GET" ? undefined : body);
  });
}

function errorOf(json: { Response: Record<string, unknown> }): { Code: string; Message: string } {
  return json.Response["Error"] as { Code: string; Message: string };
}

describe("the API server with the official SDK", () => {
  it("serves DescribeInstances: the SDK gets the dispatch result and a RequestId", async () => {
    reply = async () => ({ TotalCount: 1, InstanceSet: [{ InstanceId: "ins-abcd1234" }] });
    const result = await sdkClient().DescribeInstances({ InstanceIds: ["ins-abcd1234"], Limit: 5 });
    expect(result.TotalCount).toBe(1);
    expect(result.InstanceSet?.[0]?.InstanceId).toBe("ins-abcd1234");
    expect(result.RequestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.command).toEqual({
      action: "DescribeInstances",
      params: { instanceIds: ["ins-abcd1234"], filters: [], offset: 0, limit: 5 },
    });
    // host: the request's Host header (console URLs are built on it).
    expect(calls[0]!.context).toEqual({ requestId: result.RequestId, secretId: SECRET_ID, host: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
  });

  it("serves RunInstances with typed parameters", async () => {
    reply = async () => ({ InstanceIdSet: ["ins-new00001"] });
    const result = await sdkClient().RunInstances({
      InstanceChargeType: "CDHPAID",
      Placement: { Zone: "ap-guangzhou-3", HostId: "host-abcd1234" },
      InstanceType: "CDH_2C4G",
      ImageId: "img-abcd1234",
      InstanceName: "web",
    });
    expect(result.InstanceIdSet).toEqual(["ins-new00001"]);
    const command = calls[0]!.command;
    expect(command).toMatchObject({ action: "RunInstances", params: { cpu: 2, memoryGiB: 4, imageId: "img-abcd1234", placement: { hostId: "host-abcd1234" } } });
  });

  it("reports a parameter error to the SDK as TencentCloudSDKHttpException with the CVM code", async () => {
    const err = await sdkError(sdkClient().StartInstances({ InstanceIds: ["ins-1122"] }));
    expect(err.code).toBe("InvalidInstanceId.Malformed");
    expect(err.message).toContain("`InstanceIds.0`");
    expect(err.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(calls).toHaveLength(0);
  });

  it("answers a wrong SecretKey with AuthFailure.SignatureFailure", async () => {
    const err = await sdkError(sdkClient("wrong-key").DescribeInstances({}));
    expect(err.code).toBe("AuthFailure.SignatureFailure");
    expect(calls).toHaveLength(0);
  });

  it("answers an unknown SecretId with AuthFailure.SecretIdNotFound", async () => {
    const err = await sdkError(sdkClient(SECRET_KEY, "AKIDnobody").DescribeInstances({}));
    expect(err.code).toBe("AuthFailure.SecretIdNotFound");
    expect(calls).toHaveLength(0);
  });

  it("passes an ApiError from dispatch through with its code", async () => {
    reply = async () => {
      throw new ApiError("InvalidInstanceId.NotFound", "instance ins-abcd1234 does not exist on this host");
    };
    const err = await sdkError(sdkClient().StartInstances({ InstanceIds: ["ins-abcd1234"] }));
    expect(err).toMatchObject({ code: "InvalidInstanceId.NotFound", message: "instance ins-abcd1234 does not exist on this host" });
  });

  it("scrubs every registered secret from the error messages it sends (the one sanitizer)", async () => {
    const secret = "Tr0ub4dor&3-user-password";
    addSecret(secret);
    try {
      reply = async () => {
        throw new ApiError("InvalidParameterValue", `the guest refused ${secret} (base64 ${Buffer.from(secret).toString("base64")})`);
      };
      const r = await raw({ headers: { "X-TC-Action": "StartInstances" }, body: JSON.stringify({ InstanceIds: ["ins-abcd1234"] }) });
      const text = JSON.stringify(r.json);
      expect(r.json.Response.Error).toMatchObject({ Code: "InvalidParameterValue" });
      expect(text).toContain(`the guest refused ${REDACTED} (base64 ${REDACTED})`);
      expect(text).not.toContain(secret);
      expect(text).not.toContain(Buffer.from(secret).toString("base64"));
      // A refusal the edge makes itself (an unknown path quoted back) is scrubbed too.
      const path = await raw({ path: `/${encodeURIComponent(secret)}` });
      expect(path.status).toBe(404);
      expect(JSON.stringify(path.json)).not.toContain(encodeURIComponent(secret));
      expect((path.json.Response.Error as { Message: string }).Message).toContain(REDACTED);
    } finally {
      secrets.clear();
    }
  });

  it("turns any other dispatch error into InternalError without leaking it, and logs it", async () => {
    reply = async () => {
      throw new Error("virsh said: secret path /var/lib/x");
    };
    const err = await sdkError(sdkClient().DescribeInstances({}));
    expect(err.code).toBe("InternalError");
    expect(err.message).not.toContain("virsh");
    expect(logs.some((l) => l.level === "error" && String((l.obj["err"] as Error).message).includes("virsh"))).toBe(true);
  });
});

describe("the API server with hand-made requests", () => {
  it("answers a stale timestamp with AuthFailure.SignatureExpire", async () => {
    const res = await raw({ timestamp: Math.floor(Date.now() / 1000) - 600 });
    expect(res.status).toBe(200);
    expect(errorOf(res.json).Code).toBe("AuthFailure.SignatureExpire");
    expect(calls).toHaveLength(0);
  });

  it("refuses a 2 MiB body with InvalidParameter and never dispatches", async () => {
    const big = JSON.stringify({ Filters: [{ Name: "instance-name", Values: ["x".repeat(2 * 1024 * 1024)] }] });
    const res = await raw({ body: big });
    expect(errorOf(res.json)).toEqual({ Code: "InvalidParameter", Message: "request body exceeds 1048576 bytes" });
    expect(calls).toHaveLength(0);
  });

  it("refuses a 2 MiB body sent through the SDK too", async () => {
    const err = await sdkError(sdkClient().DescribeInstances({ Filters: [{ Name: "instance-name", Values: ["x".repeat(2 * 1024 * 1024)] }] }));
    expect(err.code).toBe("InvalidParameter");
    expect(calls).toHaveLength(0);
  });

  it("answers GET with UnsupportedProtocol", async () => {
    const res = await raw({ method: "GET" });
    expect(res.status).toBe(200);
    expect(errorOf(res.json).Code).toBe("UnsupportedProtocol");
  });

  it("answers another path with a 404 envelope", async () => {
    const res = await raw({ path: "/v2/instances" });
    expect(res.status).toBe(404);
    expect(errorOf(res.json).Code).toBe("InvalidAction");
    expect(res.json.Response["RequestId"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("answers an unknown action with InvalidAction after checking the signature", async () => {
    const res = await raw({ headers: { "X-TC-Action": "DescribeRegions" } });
    expect(errorOf(res.json).Code).toBe("InvalidAction");
    const unsigned = await raw({ headers: { "X-TC-Action": "DescribeRegions" }, sign: false });
    expect(errorOf(unsigned.json).Code).toBe("MissingParameter");
  });

  it("answers a wrong version with NoSuchVersion", async () => {
    const res = await raw({ headers: { "X-TC-Version": "2020-01-01" } });
    expect(errorOf(res.json).Code).toBe("NoSuchVersion");
  });

  it("answers a missing X-TC-Action with MissingParameter", async () => {
    const res = await raw({ headers: { "X-TC-Action": "" } });
    expect(errorOf(res.json)).toEqual({ Code: "MissingParameter", Message: "missing header X-TC-Action" });
  });

  it("accepts application/json with a charset and refuses other content types", async () => {
    expect((await raw({ headers: { "Content-Type": "application/json; charset=utf-8" } })).json.Response["Echo"]).toBe(
      "DescribeInstances",
    );
    expect(errorOf((await raw({ headers: { "Content-Type": "text/plain" } })).json).Code).toBe("InvalidParameter");
  });

  it("answers a signed but invalid JSON body with InvalidParameter", async () => {
    const res = await raw({ body: "{not json" });
    expect(errorOf(res.json)).toEqual({ Code: "InvalidParameter", Message: "the request body is not valid JSON" });
  });

  it("logs one line per request without the body", async () => {
    await raw({ body: JSON.stringify({ Filters: [{ Name: "instance-name", Values: ["very-secret-name"] }] }) });
    const lines = logs.filter((l) => l.msg === "api request");
    expect(lines).toHaveLength(1);
    expect(lines[0]!.obj).toMatchObject({ action: "DescribeInstances", secretId: SECRET_ID, code: "Success" });
    expect(typeof lines[0]!.obj["durationMs"]).toBe("number");
    expect(JSON.stringify(logs)).not.toContain("very-secret-name");
  });
});
