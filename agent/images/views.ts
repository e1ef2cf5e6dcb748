/**
 * DescribeImages' view of an image: the CVM Image structure (seed API §2.4), with
 * ErrorCode/ErrorMessage when an import or creation failed.
 */
import { storedOsFamily } from "../os-family.js";
import type { ImageRecord } from "./model.js";

const GiB = 1024 ** 3;

/** The CVM Image structure. */
export function toCvmImage(record: ImageRecord): Record<string, unknown> {
  const done = record.state === "NORMAL";
  return {
    ImageId: record.imageId,
    OsName: `${record.osType} ${record.osVersion}`.trim(),
    ImageType: "PRIVATE_IMAGE",
    CreatedTime: record.createdTime,
    ImageName: record.imageName,
    ImageDescription: record.imageDescription,
    ImageSize: record.virtualSizeBytes ? Math.ceil(record.virtualSizeBytes / GiB) : 0,
    Architecture: record.architecture,
    ImageState: record.state,
    Platform: record.osType,
    ImageCreator: "",
    ImageSource: record.origin ?? "IMPORT",
    SyncPercent: done ? 100 : Math.floor(record.progressPercent ?? 0),
    IsSupportCloudinit: storedOsFamily(record.osType) === "linux",
    ImageFormat: "qcow2",
    OsType: storedOsFamily(record.osType),
    OsVersion: record.osVersion,
    BootMode: record.bootMode,
    Tags: (record.tags ?? []).map((t) => ({ Key: t.key, Value: t.value })),
    ...(record.errorCode ? { ErrorCode: record.errorCode } : {}),
    ...(record.errorMessage ? { ErrorMessage: record.errorMessage } : {}),
  };
}

/** The fields DescribeImages' filters match (image-id, image-name, image-state, image-type). */
export function imageFilterField(record: ImageRecord, name: "image-id" | "image-name" | "image-state" | "image-type"): string {
  const cvm = toCvmImage(record);
  return String({ "image-id": cvm.ImageId, "image-name": cvm.ImageName, "image-state": cvm.ImageState, "image-type": cvm.ImageType }[name]);
}
