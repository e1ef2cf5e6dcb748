/**
 * InstanceAttachISO and InstanceDetachISO. The ISO file is fetched from ImageUrl (file:// or
 * http(s)://, like ImportImage) into the instance's directory, written to a temporary name
 * and renamed when complete, and accepted only when it is an ISO 9660 image ("CD001" at
 * byte 32769); then it goes into the instance's ISO tray (live, and in the definition).
 */
import { createWriteStream } from "node:fs";
import { copyFile, open, rename, rm } from "node:fs/promises";
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { InstanceRecord } from "../model.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerControl } from "./power.js";
import type { DomainSpecs } from "./provision.js";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ApiError } from "../errors.js";
import { parseImageUrl } from "../images.js";

export class IsoOperations {
  constructor(
    private readonly o: {
      ops: Operations;
      hypervisor: Pick<Hypervisor, "defineDomain" | "liveDiskTargets" | "changeMedia">;
      specs: DomainSpecs;
      power: PowerControl;
    },
  ) {}

  /** InstanceAttachISO: the ISO (a local file already checked by the caller) goes into the instance's ISO tray. */
  async attachIso(req: { instanceId: string; file: string; url: string }, ctx: RequestContext): Promise<void> {
    const [entry] = this.o.ops.validate([req.instanceId], "InstanceAttachISO");
    const id = req.instanceId;
    const t = this.o.ops.begin(entry!, "InstanceAttachISO", "UPDATING", ctx);
    await this.o.ops.exclusive(id, async () => {
      await this.o.ops.settle(entry!, t, "InstanceAttachISO", ctx, async () => {
        const record: InstanceRecord = { ...entry!.record, iso: { path: req.file, url: req.url } };
        const spec = this.o.specs.of(record);
        const live = this.o.power.isOn(id) ? await this.o.hypervisor.liveDiskTargets(id) : null;
        if (live && !live.includes("hdd")) {
          throw new ApiError("UnsupportedOperation.InstanceStateRunning", `${id} was defined without an ISO tray; stop it to attach an ISO`);
        }
        if (live) await this.o.hypervisor.changeMedia(id, "hdd", req.file);
        // The definition carries the ISO (and its boot order) for the next boots.
        await this.o.hypervisor.defineDomain(spec);
        entry!.record = record;
      });
    });
    this.o.ops.throwIfFailed(entry!, "InstanceAttachISO");
  }

  /** InstanceDetachISO: only while the instance is not running (the seed's rule). The file goes. */
  async detachIso(req: { instanceId: string }, ctx: RequestContext): Promise<void> {
    const [entry] = this.o.ops.validate([req.instanceId], "InstanceDetachISO");
    const id = req.instanceId;
    const iso = entry!.record.iso;
    if (!iso) throw new ApiError("ResourceNotFound", `instance ${id} has no ISO attached`);
    const t = this.o.ops.begin(entry!, "InstanceDetachISO", "UPDATING", ctx);
    await this.o.ops.exclusive(id, () =>
      this.o.ops.settle(entry!, t, "InstanceDetachISO", ctx, async () => {
        const { iso: _iso, ...record } = entry!.record;
        await this.o.hypervisor.defineDomain(this.o.specs.of(record));
        entry!.record = record;
        await rm(iso.path, { force: true });
      }),
    );
    this.o.ops.throwIfFailed(entry!, "InstanceDetachISO");
  }
}

const ISO_MAGIC_OFFSET = 32769;

export async function fetchIso(url: string, target: string, options: { maxBytes: number; timeoutMs: number }): Promise<void> {
  const source = parseImageUrl(url);
  const part = `${target}.part`;
  await rm(part, { force: true });
  try {
    if (source.kind === "file") {
      try {
        await copyFile(source.path, part);
      } catch (error) {
        throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${url} cannot be read: ${(error as Error).message}`);
      }
    } else {
      const response = await fetch(source.href, { signal: AbortSignal.timeout(options.timeoutMs) }).catch((error: unknown) => {
        throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${url} cannot be fetched: ${(error as Error).message}`);
      });
      if (!response.ok || !response.body) throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${url} answered HTTP ${response.status}`);
      let received = 0;
      const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream);
      body.on("data", (chunk: Buffer) => {
        received += chunk.length;
        if (received > options.maxBytes) body.destroy(new ApiError("InvalidParameterValue", `the ISO is larger than ${options.maxBytes} bytes`));
      });
      await pipeline(body, createWriteStream(part, { mode: 0o600 }));
    }
    const handle = await open(part, "r");
    try {
      const magic = Buffer.alloc(5);
      await handle.read(magic, 0, 5, ISO_MAGIC_OFFSET);
      if (magic.toString("latin1") !== "CD001") {
        throw new ApiError("InvalidParameterValue", `ImageUrl ${url} is not an ISO 9660 image (no CD001 signature)`);
      }
    } finally {
      await handle.close();
    }
    await rename(part, target);
  } finally {
    await rm(part, { force: true });
  }
}
