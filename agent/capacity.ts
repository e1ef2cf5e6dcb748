/**
 * Host capacity: derived from the instances themselves every time it is asked,
 * never a counter kept beside them, so it cannot drift.
 *   available = total − host reservation − what the instances were given
 * Disk figures come from the storage pools (agent/storage/pools.ts), which apply the
 * same rule to every disk file.
 */

export interface HostTotals {
  /** Logical CPUs of the host. */
  cpus: number;
  memoryBytes: number;
  /**
   * The storage pools' totals (agent/storage): capacity, and what is left after every
   * disk's promise, the image cache and the host's reservation; in GiB.
   */
  disk: { totalGiB: number; availableGiB: number; diskType: "LOCAL_BASIC" | "LOCAL_SSD" };
}

export interface CapacityPolicy {
  reservedCpu: number;
  reservedMemoryGiB: number;
  cpuAllocationRatio: number;
  memoryAllocationRatio: number;
}

/** What one instance holds. An instance whose launch failed holds nothing. Disks are the pools' business. */
export interface Allocation {
  cpu: number;
  memoryGiB: number;
}

/** The CVM HostResource structure (seed API §2.2). */
export interface HostResource {
  CpuTotal: number;
  CpuAvailable: number;
  MemTotal: number;
  MemAvailable: number;
  DiskTotal: number;
  DiskAvailable: number;
  DiskType: string;
}

const GiB = 1024 ** 3;

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

export function computeHostResource(
  totals: HostTotals,
  policy: CapacityPolicy,
  allocations: Iterable<Allocation>,
): HostResource {
  let cpu = 0;
  let mem = 0;
  for (const a of allocations) {
    cpu += a.cpu;
    mem += a.memoryGiB;
  }
  const cpuTotal = Math.floor(totals.cpus * policy.cpuAllocationRatio);
  const memTotal = round2((totals.memoryBytes / GiB) * policy.memoryAllocationRatio);
  return {
    CpuTotal: cpuTotal,
    CpuAvailable: Math.max(0, cpuTotal - policy.reservedCpu - cpu),
    MemTotal: memTotal,
    MemAvailable: Math.max(0, round2(memTotal - policy.reservedMemoryGiB - mem)),
    DiskTotal: totals.disk.totalGiB,
    DiskAvailable: Math.max(0, totals.disk.availableGiB),
    DiskType: totals.disk.diskType,
  };
}

/** Why a request's CPU and memory do not fit, or null when they do (disks: Storage.place). */
export function admissionShortfall(resource: HostResource, request: Allocation, count: number): string | null {
  const needCpu = request.cpu * count;
  const needMem = request.memoryGiB * count;
  const short: string[] = [];
  if (needCpu > resource.CpuAvailable) short.push(`${needCpu} vCPU requested, ${resource.CpuAvailable} available`);
  if (needMem > resource.MemAvailable + 1e-9) short.push(`${needMem} GiB memory requested, ${resource.MemAvailable} GiB available`);
  return short.length ? short.join("; ") : null;
}
