/**
 * ModifyInstancesVpcAttribute (CVM 2017-03-12; reference/tencent-api-next.md §C.6): a new
 * primary private address for each instance, in the subnet named (agent/instances/vpc-attribute.ts).
 * Formats are checked here with the codes the API documents for them; the subnet, the VPC and
 * the addresses against the host in the operation.
 */
import { z } from "zod";
import { isIpv4 } from "../network/subnets.js";
import type { VpcAttributeRequest } from "../instances/vpc-attribute.js";
import { fail, idList, parseWith } from "./schemas.js";

const vpcSchema = z
  .object({
    VpcId: z.string().superRefine((v, ctx) => {
      if (!/^vpc-[a-z0-9]{1,32}$/.test(v)) fail(ctx, "InvalidParameterValue.VpcIdMalformed", `'${v}' is not a VPC ID (vpc- and lowercase letters or digits)`);
    }),
    SubnetId: z.string().superRefine((v, ctx) => {
      if (!/^subnet-[a-z0-9]{1,32}$/.test(v)) fail(ctx, "InvalidParameterValue.SubnetIdMalformed", `'${v}' is not a subnet ID (subnet- and lowercase letters or digits)`);
    }),
    PrivateIpAddresses: z
      .array(
        z.string().superRefine((v, ctx) => {
          if (!isIpv4(v)) fail(ctx, "InvalidParameterValue.IPAddressMalformed", `'${v}' is not an IPv4 address`);
        }),
      )
      .optional(),
    // No VPC gateways and no IPv6 on this host: refused when asked for.
    AsVpcGateway: z
      .boolean()
      .superRefine((v, ctx) => {
        if (v) fail(ctx, "InvalidParameterValue", "is not supported: this host has no public gateway for a VPC");
      })
      .optional(),
    Ipv6AddressCount: z
      .number()
      .int()
      .superRefine((v, ctx) => {
        if (v !== 0) fail(ctx, "UnsupportedOperation.IPv6NotSupportVpcMigrate", "must be 0: this host's subnets have no IPv6");
      })
      .optional(),
  })
  .strict();

const modifyInstancesVpcAttributeSchema = z
  .object({
    InstanceIds: idList("instance", 100),
    VirtualPrivateCloud: vpcSchema,
    ForceStop: z.boolean().optional(),
    // The host name is never changed by this action: information only (README).
    ReserveHostName: z.boolean().optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    const ips = v.VirtualPrivateCloud.PrivateIpAddresses;
    if (ips && ips.length !== v.InstanceIds.length) {
      fail(ctx, "InvalidParameterValue", `has ${ips.length} address(es) for ${v.InstanceIds.length} instance(s); give one per instance, in the order of InstanceIds`, [
        "VirtualPrivateCloud",
        "PrivateIpAddresses",
      ]);
    }
    if (new Set(v.InstanceIds).size !== v.InstanceIds.length) fail(ctx, "InvalidParameterValue", "names an instance twice", ["InstanceIds"]);
  });

export function parseModifyInstancesVpcAttribute(body: unknown): VpcAttributeRequest {
  const r = parseWith(modifyInstancesVpcAttributeSchema, body);
  const v = r.VirtualPrivateCloud;
  return {
    instanceIds: r.InstanceIds,
    vpcId: v.VpcId,
    subnetId: v.SubnetId,
    ...(v.PrivateIpAddresses ? { privateIpAddresses: v.PrivateIpAddresses } : {}),
    // The API's default: a running instance is stopped, hard if need be.
    forceStop: r.ForceStop ?? true,
  };
}

/** The request schemas of this file's actions (test/unit/api/fields.test.ts walks every field). */
export const VPC_ATTRIBUTE_REQUEST_SCHEMAS = { ModifyInstancesVpcAttribute: modifyInstancesVpcAttributeSchema } as const;
