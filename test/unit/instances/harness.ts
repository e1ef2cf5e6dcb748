/**
 * The instance operations wired as main.ts wires them, on the stateful fake hypervisor and
 * the fake image tool, with the real registry, journal, disk store, key pair store and
 * storage pools in a temporary directory.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { FakeHypervisor } from "../../../drivers/testing/fake-hypervisor.js";
import { FakeImageTool } from "../../../drivers/testing/fake-image-tool.js";
import type { CommandRunner } from "../../../drivers/exec/runner.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { computeHostResource } from "../../../agent/capacity.js";
import { Operations, type RequestContext } from "../../../agent/core/operations.js";
import { DiskStore } from "../../../agent/disks/store.js";
import { ApiError } from "../../../agent/errors.js";
import { DomainError } from "../../../agent/core/errors.js";
import type { ImageCatalog } from "../../../agent/images/catalog.js";
import type { ImageRecord, UsableImage } from "../../../agent/images/model.js";
import { createInstanceOperations, type InstanceOperations } from "../../../agent/instances/index.js";
import { InstanceRegistry } from "../../../agent/instances/registry.js";
import { InstanceSync } from "../../../agent/instances/sync.js";
import { Journal } from "../../../agent/journal.js";
import { KeyPairStore, keyPairsFile } from "../../../agent/logins/keypairs.js";
import type { InstanceState } from "../../../agent/model.js";
import { DataPaths } from "../../../agent/paths.js";
import { PoolSet } from "../../../agent/storage/pools.js";
import { Storage } from "../../../agent/storage/storage.js";

export const IMAGE_ID = "img-debian01";
const GiB = 1024 ** 3;

/** The image catalog as the instance operations see it: one NORMAL image, names checked. */
class FakeImages {
  readonly names = new Set<string>();
  constructor(private readonly base: string) {}

  requireUsable(imageId: string): UsableImage {
    if (imageId !== IMAGE_ID) throw new Error(`FakeImages: unknown image ${imageId}`);
    return { imageId, path: this.base, virtualSizeBytes: GiB, osName: "Debian 12", osFamily: "linux", bootMode: "Legacy BIOS", configDrive: "config-2" };
  }

  checkName(imageName: string): void {
    if (this.names.has(imageName)) throw new ApiError("InvalidImageName.Duplicate", `ImageName ${imageName} is already used`);
  }

  get(imageId: string): ImageRecord | undefined {
    return imageId === IMAGE_ID ? ({ imageId, bootMode: "Legacy BIOS", osType: "Debian", osVersion: "12", architecture: "x86_64" } as ImageRecord) : undefined;
  }
}

export interface Harness {
  dir: string;
  paths: DataPaths;
  hv: FakeHypervisor;
  tool: FakeImageTool;
  registry: InstanceRegistry;
  journal: Journal;
  disks: DiskStore;
  instances: InstanceOperations;
  /** The storage pools as DescribeHosts and the reports see them. */
  storage: Storage;
  /** Image names taken (CreateImage's name check). */
  imageNames: Set<string>;
  /** A restart: new operations over the same directory and the same fake libvirt; `meanwhile` runs while no agent is there. */
  restart(meanwhile?: () => void): Promise<Harness>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  cpus?: number;
  memoryGiB?: number;
  softStopTimeoutMs?: number;
  /** Launches at once (launch_concurrency). Default 4. */
  launchConcurrency?: number;
  /** The pool's size (size_gib); default: its filesystem's. */
  poolSizeGiB?: number;
  /** instance_overhead_gib; default 0. */
  instanceOverheadGiB?: number;
  /** Shared with a previous harness (restart). */
  dir?: string;
  hv?: FakeHypervisor;
  tool?: FakeImageTool;
}

const failClosedRunner: CommandRunner = new Proxy({} as CommandRunner, {
  get: (_t, name) => () => {
    throw new Error(`unexpected command runner call: ${String(name)}`);
  },
});

export async function makeHarness(o: HarnessOptions = {}): Promise<Harness> {
  const dir = o.dir ?? (await mkdtemp(join(tmpdir(), "instances-")));
  const paths = new DataPaths(dir);
  const hv = o.hv ?? new FakeHypervisor();
  const tool = o.tool ?? new FakeImageTool();
  const logger = pino({ level: "silent" });
  await mkdir(paths.imagesDir, { recursive: true });
  const base = join(paths.imagesDir, "base.qcow2");
  await writeFile(base, JSON.stringify({ sizeBytes: GiB }));

  const registry = new InstanceRegistry(() => undefined);
  const journal = new Journal(paths.journalDir);
  const disks = new DiskStore(paths.disksDir);
  await disks.load();
  const pools = new PoolSet([{ name: "local", path: join(dir, "pool"), diskType: "LOCAL_BASIC", iops: 0, throughputMBps: 0, ...(o.poolSizeGiB !== undefined ? { sizeGiB: o.poolSizeGiB } : {}) }]);
  await pools.load();
  const storage = new Storage({
    pools,
    disks,
    registry,
    imageTool: tool,
    runner: failClosedRunner,
    wipe: "none",
    ...(o.instanceOverheadGiB !== undefined ? { instanceOverheadGiB: o.instanceOverheadGiB } : {}),
    imageCache: { dir: paths.imagesDir, bytes: () => 0 },
    logger,
  });
  await storage.measure();
  const images = new FakeImages(base);
  const keyPairs = new KeyPairStore({ file: keyPairsFile(paths) });
  const ops = new Operations({ registry, records: hv, codeOf: cvmCodeOf, logger });
  const instances = createInstanceOperations({
    ops,
    registry,
    journal,
    paths,
    hypervisor: hv,
    imageTool: tool,
    images: images as unknown as ImageCatalog,
    storage,
    disks,
    keyPairs,
    drives: { buildDrive: async () => undefined, refresh: async () => undefined },
    snapshots: { dropForDisk: async () => undefined },
    subnets: [{ subnetId: "subnet-test0001", vpcId: "vpc-test0001", network: "cdhtest-net", bridge: "cdhbr9", address: "10.9.0.0", prefixLength: 24, gateway: "10.9.0.1", dns: [] }],
    hostResource: () =>
      computeHostResource(
        { cpus: o.cpus ?? 8, memoryBytes: (o.memoryGiB ?? 16) * GiB, disk: storage.totals() },
        { reservedCpu: 0, reservedMemoryGiB: 0, cpuAllocationRatio: 1, memoryAllocationRatio: 1 },
        [...registry.all()].filter((e) => !e.launchFailed).map((e) => ({ cpu: e.record.cpu, memoryGiB: e.record.memoryGiB })),
      ),
    hostId: "host-test0001",
    virtType: "qemu",
    agentVersion: "test",
    ioLimits: () => undefined,
    rescue: { kernel: "/boot/rescue", initrd: "/boot/rescue.img" },
    softStopTimeoutMs: o.softStopTimeoutMs ?? 2000,
    softStopRetryMs: 200,
    launchConcurrency: o.launchConcurrency ?? 4,
    powerRestore: { enabled: true, concurrency: 2 },
    checkpoint: () => undefined,
    logger,
  } as Parameters<typeof createInstanceOperations>[0]);
  const sync = new InstanceSync({ hypervisor: hv, registry, logger, reconcileIntervalMs: 3_600_000, onOffWithoutOperation: (id) => instances.intents.offWithoutOperation(id) });
  await instances.recovery.run();
  sync.start();
  const harness: Harness = {
    dir,
    paths,
    hv,
    tool,
    registry,
    journal,
    disks,
    instances,
    storage,
    imageNames: images.names,
    async restart(meanwhile?: () => void) {
      sync.stop();
      await instances.ops.idle();
      meanwhile?.();
      return makeHarness({ ...o, dir, hv, tool });
    },
    async close() {
      sync.stop();
      await instances.ops.idle();
      hv.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return harness;
}

export const ctx = (requestId = "req-test"): RequestContext => ({ requestId });

/** The code the API answers a refused call with (the edge's error map); a call that succeeds, or any other error, fails the test. */
export async function codeOf(work: () => unknown): Promise<string> {
  try {
    await work();
  } catch (error) {
    if (error instanceof ApiError || error instanceof DomainError) return cvmCodeOf(error);
    throw error;
  }
  throw new Error("the request was accepted");
}

/** A RunInstances request for `count` instances of `cpu` vCPU and `memoryGiB` GiB. */
export function runRequest(count = 1, cpu = 1, memoryGiB = 1) {
  return {
    instanceType: `CDH_${cpu}C${memoryGiB}G`,
    cpu,
    memoryGiB,
    imageId: IMAGE_ID,
    systemDisk: { diskType: "LOCAL_BASIC" as const, sizeGiB: 10 },
    names: Array.from({ length: count }, (_, i) => `vm-${i}`),
  };
}

export function stateOf(h: Harness, id: string): InstanceState | undefined {
  const e = h.registry.get(id);
  return e && h.registry.stateOf(e);
}

/** Waits (bounded) until the instance is in `state`. */
export async function until(h: Harness, id: string, state: InstanceState, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (stateOf(h, id) !== state) {
    if (Date.now() > deadline) throw new Error(`${id} is ${stateOf(h, id)}, not ${state}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
