/**
 * Placement as RunInstances, CloneInstance and CreateDisks take it, checked against this host:
 * the zone must be the host's (`host_zone`), the host ID this host's, and HostIds must include it.
 * ProjectId is checked by the schemas (only the default project, 0, exists).
 */
import { ApiError } from "../errors.js";

export interface PlacementRequest {
  zone?: string | undefined;
  hostId?: string | undefined;
  hostIds?: readonly string[] | undefined;
}

export function checkPlacement(p: PlacementRequest, host: { hostId: string; zone: string }): void {
  if (p.hostId !== undefined && p.hostId !== host.hostId) {
    throw new ApiError("InvalidHostId.NotFound", `Placement.HostId ${p.hostId} is not this host (${host.hostId})`);
  }
  if (p.hostIds?.length && !p.hostIds.includes(host.hostId)) {
    throw new ApiError("InvalidHostId.NotFound", `Placement.HostIds does not include this host (${host.hostId})`);
  }
  if (p.zone !== undefined && p.zone !== host.zone) {
    throw new ApiError("InvalidZone.MismatchRegion", `\`Placement.Zone\` ${JSON.stringify(p.zone)} is not this host's zone (${host.zone})`);
  }
}
