/**
 * InstanceAttachISO and InstanceDetachISO. The ISO file is fetched from ImageUrl (file:// or
 * http(s)://, like ImportImage) into the instance's directory, written to a temporary name
 * and renamed when complete, and accepted only when it is an ISO 9660 image ("CD001" at
 * byte 32769); then it goes into the instance's ISO tray (live, and in the definition).
 */
import { open, rename, rm } from "node:fs/promises";
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { InstanceRecord } from "../model.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerControl } from "./power.js";
import type { DomainSpecs } from "./provision.js";
import { DomainError } from "../core/errors.js";
import { checkReadable, copyLocal, download, FetchError } from "../images/fetch.js";
import { parseImageUrl, type ImageSource } from "../images/source.js";

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
          throw new DomainError("InstanceRunning", `${id} was defined without an ISO tray; stop it to attach an ISO`);
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
    if (!iso) throw new DomainError("NotFound", `instance ${id} has no ISO attached`);
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

/** The ISO's URL, checked as far as can be without fetching it (DryRun stops after this). */
export async function checkIsoUrl(url: string): Promise<ImageSource> {
  const source = parseImageUrl(url);
  if (source.kind === "file") await checkReadable(source.path).catch((error: unknown) => {
    throw isoError(url, error);
  });
  return source;
}

/** Fetches the ISO into `target` (through the images' downloader) and checks that it is one. */
export async function fetchIso(url: string, target: string, options: { maxBytes: number; timeoutMs: number }): Promise<void> {
  const source = await checkIsoUrl(url);
  const part = `${target}.part`;
  await rm(part, { force: true });
  try {
    const limits = { maxBytes: options.maxBytes, limitName: "max_image_bytes", timeoutMs: options.timeoutMs };
    await (source.kind === "file" ? copyLocal(source.path, part, limits) : download(source.href, part, limits)).catch((error: unknown) => {
      throw isoError(url, error);
    });
    const handle = await open(part, "r");
    try {
      const magic = Buffer.alloc(5);
      await handle.read(magic, 0, 5, ISO_MAGIC_OFFSET);
      if (magic.toString("latin1") !== "CD001") {
        throw new DomainError("BadValue", `ImageUrl ${url} is not an ISO 9660 image (no CD001 signature)`);
      }
    } finally {
      await handle.close();
    }
    await rename(part, target);
  } finally {
    await rm(part, { force: true });
  }
}

function isoError(url: string, error: unknown): Error {
  if (!(error instanceof FetchError)) return error as Error;
  if (error.reason === "too-large") return new DomainError("BadValue", `the ISO at ImageUrl is too large: ${error.message}`);
  return new DomainError("BadUrl", `ImageUrl ${url} cannot be read: ${error.message}`);
}
