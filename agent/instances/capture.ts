/**
 * CreateImage: a new image from an instance's system disk.
 */
import { rm } from "node:fs/promises";
import type { Logger } from "pino";
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { configDriveTags } from "../images/source.js";
import { DomainError, dryRunStop } from "../core/errors.js";
import type { ImageCatalog } from "../images/catalog.js";
import type { DataPaths } from "../paths.js";
import { consistentCopy } from "../disks/copy.js";
import type { Operations, RequestContext } from "../core/operations.js";
import { cleanGuestForImage } from "./guest-cleanup.js";
import type { PowerControl } from "./power.js";
import type { Checkpoint } from "./provision.js";

export interface CreateImageRequest {
  instanceId: string;
  imageName: string;
  imageDescription?: string;
  dryRun?: boolean;
  cleanGuest?: boolean;
}

export class ImageCapture {
  constructor(
    private readonly o: {
      ops: Operations;
      paths: DataPaths;
      images: Pick<ImageCatalog, "get" | "checkName" | "beginImage" | "completeImage" | "failImage">;
      hypervisor: Hypervisor;
      imageTool: ImageTool;
      power: PowerControl;
      checkpoint: Checkpoint;
      logger: Logger;
    },
  ) {}

  /**
   * CreateImage: a new image from the instance's system disk. A stopped disk is copied
   * as it is; a running one with its filesystems frozen by the guest agent, or paused
   * when there is none (agent/disks/copy.ts). The image is CREATING until the copy is in
   * the cache; `done` settles then. The instance keeps its state meanwhile.
   */
  async createImage(
    req: CreateImageRequest,
    ctx: RequestContext,
  ): Promise<{ imageId: string; done: Promise<void> }> {
    const [entry] = this.o.ops.validate([req.instanceId], "CreateImage");
    const record = entry!.record;
    if (req.cleanGuest && (record.osType === "windows" || !this.o.power.isOn(req.instanceId))) {
      throw new DomainError("BadValue", "`Sysprep` TRUE clears logs and shell histories inside a running Linux guest through its guest agent; this instance is not one");
    }
    const images = this.o.images;
    const source = images.get(record.imageId);
    const [osType, ...version] = (record.osName ?? "Linux").split(" ");
    // Every check beginImage makes, before DryRun stops: the name must be free.
    images.checkName(req.imageName);
    if (req.dryRun) throw dryRunStop();
    const imageId = await images.beginImage({
      imageName: req.imageName,
      ...(req.imageDescription !== undefined ? { imageDescription: req.imageDescription } : {}),
      osType: source?.osType ?? osType ?? "Linux",
      osVersion: source?.osVersion ?? version.join(" "),
      architecture: source?.architecture ?? "x86_64",
      bootMode: source?.bootMode ?? "Legacy BIOS",
      source: "CREATE_IMAGE",
      // The new image wants the drive its instance was made with.
      tags: configDriveTags(record.configDrive),
    });
    const t = this.o.ops.begin(entry!, "CreateImage", "UPDATING", ctx);
    let settle!: (error?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (e) => (e ? reject(e as Error) : resolve())));
    void done.catch(() => undefined); // reported through the image and LatestOperation
    this.o.ops.background(req.instanceId, t, () =>
      this.o.ops.settle(entry!, t, "CreateImage", ctx, async () => {
        const file = `${this.o.paths.tmpDir}/${imageId}.qcow2`;
        try {
          if (req.cleanGuest) {
            const outcome = await cleanGuestForImage(this.o.hypervisor, req.instanceId);
            if (!outcome.done) throw new DomainError("GuestDidNotComply", `the guest could not be cleaned for the image: ${outcome.reason}`);
            this.o.logger.info({ instanceId: req.instanceId, imageId }, "guest logs and shell histories cleared for the image");
          }
          const quiesce = await consistentCopy({
            imageTool: this.o.imageTool,
            hypervisor: this.o.hypervisor,
            logger: this.o.logger,
            source: record.systemDisk.path,
            target: file,
            ...(this.o.power.isOn(req.instanceId) ? { runningInstance: req.instanceId, quiesceMarker: this.o.paths.quiesceMarker(req.instanceId) } : {}),
            checkpoint: () => this.o.checkpoint("image:copying"),
          });
          this.o.logger.info({ instanceId: req.instanceId, imageId, quiesce }, "system disk copied for the image");
          await images.completeImage(imageId, file);
          settle();
        } catch (error) {
          await images.failImage(imageId, (error as Error).message).catch(() => undefined);
          settle(error);
          throw error;
        } finally {
          await rm(file, { force: true });
          await rm(`${file}.part`, { force: true });
        }
      }),
    );
    return { imageId, done };
  }
}
