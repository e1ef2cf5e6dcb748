/**
 * The one dispatcher: every parsed API command is routed here by one exhaustive
 * switch. HTTP (and, later, the command line or scheduled jobs) only build commands.
 */
import { randomUUID } from "node:crypto";
import type { Command } from "./api/commands.js";
import type { Dispatch } from "./api/server.js";
import type { HostResource } from "./capacity.js";
import { ApiError } from "./errors.js";
import { hostMatches, toHostItem, type HostIdentity } from "./host.js";
import { toCvmImage, type ImageCatalog } from "./images.js";
import type { InstanceRegistry } from "./instances/registry.js";
import type { InstanceService } from "./instances/service.js";
import { selectInstances, toCvmInstance } from "./instances/views.js";
import { expandInstanceNames } from "./api/commands.js";

export interface DispatcherDeps {
  service: InstanceService;
  images: ImageCatalog;
  registry: InstanceRegistry;
  identity: HostIdentity;
  hostResource: () => HostResource;
  libvirtConnected: () => boolean;
}

/** Mutating actions answer with a TaskId at once; progress shows in the instances' states. */
function task(): { TaskId: string } {
  return { TaskId: randomUUID() };
}

function dryRun(flag: boolean): void {
  if (flag) throw new ApiError("DryRunOperation", "the request would have succeeded; DryRun was set");
}

export function createDispatcher(deps: DispatcherDeps): Dispatch {
  const { service, images, registry, identity } = deps;
  const host = { hostId: identity.hostId, zone: identity.zone };

  return async (command: Command, context) => {
    const ctx = { requestId: context.requestId };
    switch (command.action) {
      case "RunInstances": {
        const p = command.params;
        const hostId = p.placement.hostId;
        if (hostId && hostId !== identity.hostId) throw new ApiError("InvalidHostId.NotFound", `Placement.HostId ${hostId} is not this host (${identity.hostId})`);
        if (p.placement.hostIds?.length && !p.placement.hostIds.includes(identity.hostId)) {
          throw new ApiError("InvalidHostId.NotFound", `Placement.HostIds does not include this host (${identity.hostId})`);
        }
        if (p.dataDisks.length) throw new ApiError("InvalidParameterValue", "DataDisks are not supported by this agent version");
        if (p.virtualPrivateCloud) throw new ApiError("InvalidParameterValue", "VirtualPrivateCloud is not supported by this agent version");
        if (p.loginSettings?.password || p.loginSettings?.keyIds?.length) {
          throw new ApiError("InvalidParameterValue", "LoginSettings are not supported by this agent version");
        }
        const names = p.instanceName ? expandInstanceNames(p.instanceName, p.instanceCount) : Array.from({ length: p.instanceCount }, () => "");
        const ids = await service.run(
          {
            instanceType: p.instanceType,
            cpu: p.cpu,
            memoryGiB: p.memoryGiB,
            imageId: p.imageId,
            systemDisk: { diskType: p.systemDisk.diskType, sizeGiB: p.systemDisk.diskSizeGiB },
            names,
            ...(p.hostName ? { hostName: p.hostName } : {}),
            ...(p.userData ? { userData: p.userData } : {}),
            ...(p.clientToken ? { clientToken: p.clientToken } : {}),
            dryRun: p.dryRun,
          },
          ctx,
        );
        return { InstanceIdSet: ids };
      }
      case "DescribeInstances": {
        const p = command.params;
        const { total, page } = selectInstances({
          registry,
          host,
          ...(p.instanceIds ? { instanceIds: p.instanceIds } : {}),
          filters: p.filters.map((f) => ({ Name: f.name, Values: f.values })),
          offset: p.offset,
          limit: p.limit,
        });
        return { TotalCount: total, InstanceSet: page.map((r) => toCvmInstance(r.entry, r.state, host)) };
      }
      case "DescribeInstancesStatus": {
        const p = command.params;
        const { total, page } = selectInstances({ registry, host, ...(p.instanceIds ? { instanceIds: p.instanceIds } : {}), offset: p.offset, limit: p.limit });
        return { TotalCount: total, InstanceStatusSet: page.map((r) => ({ InstanceId: r.entry.record.instanceId, InstanceState: r.state })) };
      }
      case "StartInstances":
        service.start(command.params.instanceIds, ctx);
        return task();
      case "StopInstances": {
        const p = command.params;
        if (p.dryRun) {
          service.validate(p.instanceIds, p.stopType === "HARD" ? "StopInstancesHard" : "StopInstances");
          dryRun(true);
        }
        service.stop(p.instanceIds, p.stopType, ctx);
        return task();
      }
      case "RebootInstances":
        service.reboot(command.params.instanceIds, command.params.mode, ctx);
        return task();
      case "TerminateInstances": {
        const p = command.params;
        if (p.dryRun) {
          service.validate(p.instanceIds, "TerminateInstances");
          dryRun(true);
        }
        await service.terminate(p.instanceIds, ctx);
        return task();
      }
      case "ImportImage": {
        const p = command.params;
        dryRun(p.dryRun);
        const imageId = await images.startImport({
          ImageUrl: p.imageUrl,
          ImageName: p.imageName,
          ImageDescription: p.imageDescription,
          OsType: p.osType,
          OsVersion: p.osVersion,
          Architecture: p.architecture,
          BootMode: p.bootMode,
        });
        return { ImageId: imageId, ...task() };
      }
      case "DescribeImages": {
        const p = command.params;
        let rows = p.imageIds ? p.imageIds.flatMap((id) => images.get(id) ?? []) : images.list();
        for (const f of p.filters) {
          const values = new Set(f.values);
          rows = rows.filter((r) => {
            const cvm = toCvmImage(r);
            const field = { "image-id": cvm.ImageId, "image-name": cvm.ImageName, "image-state": cvm.ImageState, "image-type": cvm.ImageType }[f.name];
            return values.has(String(field));
          });
        }
        return { TotalCount: rows.length, ImageSet: rows.slice(p.offset, p.offset + p.limit).map(toCvmImage) };
      }
      case "DeleteImages": {
        const p = command.params;
        if (p.dryRun) {
          images.checkDelete(p.imageIds);
          dryRun(true);
        }
        await images.delete(p.imageIds);
        return {};
      }
      case "DescribeHosts": {
        const p = command.params;
        const state = deps.libvirtConnected() ? "RUNNING" : "UNKNOWN";
        const matches = hostMatches(identity, state, p.filters.map((f) => ({ Name: f.name, Values: f.values })));
        const items = matches
          ? [toHostItem({ identity, resource: deps.hostResource(), instanceIds: [...registry.all()].map((e) => e.record.instanceId), state })]
          : [];
        return { TotalCount: items.length, HostSet: items.slice(p.offset, p.offset + p.limit) };
      }
      default: {
        const unreachable: never = command;
        throw new ApiError("InvalidAction", `action ${(unreachable as { action: string }).action} is not handled`);
      }
    }
  };
}
