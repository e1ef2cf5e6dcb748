/**
 * Instance tags as RunInstances takes them (TagSpecification, reference/seeds-cvm-api.md
 * §2.3c: `ResourceType` and `Tags` of `{Key, Value}`), with the limits of Tencent Cloud's
 * tag service that CVM applies: a key of 1–127 characters, a value of 0–255, at most 50
 * tags on a resource, each key once, keys starting with `qcloud:`, `tencent:` or `project`
 * reserved. Only `instance` exists to tag here: any other ResourceType is refused naming it.
 */
import { z } from "zod";
import type { InstanceTag } from "../model.js";
import { fail } from "./schemas.js";

export const TAG_KEY_MAX = 127;
export const TAG_VALUE_MAX = 255;
export const TAGS_PER_RESOURCE = 50;
/** Key prefixes the tag service keeps for itself (FailedOperation.TagKeyReserved). */
export const RESERVED_TAG_PREFIXES = ["qcloud:", "tencent:", "project"] as const;

const CONTROL = /[\u0000-\u001f\u007f]/;

const tagKey = z.string().superRefine((v, ctx) => {
  const length = [...v].length;
  if (length === 0) fail(ctx, "FailedOperation.IllegalTagKey", "must not be empty");
  else if (length > TAG_KEY_MAX) fail(ctx, "FailedOperation.IllegalTagKey", `is ${length} characters long; at most ${TAG_KEY_MAX} are allowed`);
  else if (CONTROL.test(v)) fail(ctx, "FailedOperation.IllegalTagKey", "must not contain control characters");
  else if (RESERVED_TAG_PREFIXES.some((p) => v.toLowerCase().startsWith(p))) {
    fail(ctx, "FailedOperation.TagKeyReserved", `is reserved: keys starting with ${RESERVED_TAG_PREFIXES.join(", ")} belong to the platform`);
  }
});

const tagValue = z.string().superRefine((v, ctx) => {
  const length = [...v].length;
  if (length > TAG_VALUE_MAX) fail(ctx, "FailedOperation.IllegalTagValue", `is ${length} characters long; at most ${TAG_VALUE_MAX} are allowed`);
  else if (CONTROL.test(v)) fail(ctx, "FailedOperation.IllegalTagValue", "must not contain control characters");
});

const tag = z.object({ Key: tagKey, Value: tagValue }).strict();

/** RunInstances' TagSpecification: entries of ResourceType `instance` only; their tags together are the instance's. */
export const instanceTagSpecification = z
  .array(
    z
      .object({
        ResourceType: z.string().superRefine((v, ctx) => {
          if (v !== "instance") fail(ctx, "InvalidParameterValue", `must be instance: '${v}' is not a resource RunInstances makes on this host`);
        }),
        Tags: z.array(tag),
      })
      .strict(),
  )
  .superRefine((specs, ctx) => {
    const seen = new Set<string>();
    let count = 0;
    specs.forEach((spec, i) => {
      spec.Tags.forEach((t, j) => {
        count += 1;
        if (seen.has(t.Key)) fail(ctx, "InvalidParameterValue.DuplicateTags", `repeats the tag key ${JSON.stringify(t.Key)}`, [i, "Tags", j, "Key"]);
        seen.add(t.Key);
      });
    });
    if (count > TAGS_PER_RESOURCE) {
      fail(ctx, "InvalidParameterValue.TagQuotaLimitExceeded", `holds ${count} tags; an instance takes at most ${TAGS_PER_RESOURCE}`);
    }
  });

/** The instance's tags, in the order given. */
export function toInstanceTags(specs: ReadonlyArray<{ Tags: ReadonlyArray<{ Key: string; Value: string }> }> | undefined): InstanceTag[] {
  return (specs ?? []).flatMap((s) => s.Tags.map((t) => ({ key: t.Key, value: t.Value })));
}
