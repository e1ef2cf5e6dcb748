/**
 * Host capacity: derived from the instances themselves every time it is asked,
 * never a counter kept beside them, so it cannot drift.
 *   available = total − host reservation − what the instances were given
 */

export interface HostTotals {
  /** Logical CPUs of the host. */
  cpus: number;
  memoryBytes: number;
  /** Size of the filesystem that holds the instance disks. */
  diskBytes: number;
  diskType: "LOCAL_BASIC" | "LOCAL_SSD";
}

export interface CapacityPolicy {
  reservedCpu: number;
  reservedMemoryGiB: number;
  reservedDiskGiB: number;
  cpuAllocationRatio: number;
  memoryAllocationRatio: number;
}

/** What one instance holds. An instance whose launch failed holds nothing. */
export interface Allocation {
  cpu: number;
  memoryGiB: number;
  diskGiB: number;
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
  let disk = 0;
  for (const a of allocations) {
    cpu += a.cpu;
    mem += a.memoryGiB;
    disk += a.diskGiB;
  }
  const cpuTotal = Math.floor(totals.cpus * policy.cpuAllocationRatio);
  const memTotal = round2((totals.memoryBytes / GiB) * policy.memoryAllocationRatio);
  const diskTotal = Math.floor(totals.diskBytes / GiB);
  return {
    CpuTotal: cpuTotal,
    CpuAvailable: Math.max(0, cpuTotal - policy.reservedCpu - cpu),
    MemTotal: memTotal,
    MemAvailable: Math.max(0, round2(memTotal - policy.reservedMemoryGiB - mem)),
    DiskTotal: diskTotal,
    DiskAvailable: Math.max(0, diskTotal - policy.reservedDiskGiB - disk),
    DiskType: totals.diskType,
  };
}

/** Why a request does not fit, or null when it does. */
export function admissionShortfall(resource: HostResource, request: Allocation, count: number): string | null {
  const needCpu = request.cpu * count;
  const needMem = request.memoryGiB * count;
  const needDisk = request.diskGiB * count;
  const short: string[] = [];
  if (needCpu > resource.CpuAvailable) short.push(`${needCpu} vCPU requested, ${resource.CpuAvailable} available`);
  if (needMem > resource.MemAvailable + 1e-9) short.push(`${needMem} GiB memory requested, ${resource.MemAvailable} GiB available`);
  if (needDisk > resource.DiskAvailable) short.push(`${needDisk} GiB disk requested, ${resource.DiskAvailable} GiB available`);
  return short.length ? short.join("; ") : null;
}
