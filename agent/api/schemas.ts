/**
 * Shared pieces of the per-action request schemas: strict zod objects whose
 * issues are translated into CVM error codes, the ID formats, filters, paging.
 *
 * Translation of a zod issue (the first one, by priority: unknown parameter,
 * missing parameter, wrong JSON type, broken rule):
 * - unknown field             → InvalidParameter "unknown parameter `Placement.Foo`"
 * - missing required field    → MissingParameter "missing parameter `ImageId`"
 * - wrong JSON type           → InvalidParameter "`InstanceCount` must be an integer, got string"
 * - a rule written with fail() → the code it names (InvalidParameterValue.Range, …)
 * - other zod rule issues     → InvalidParameterValue naming the field
 * Paths are printed CVM-style with dots: `DataDisks.0.DiskSize`.
 */
import { z } from "zod";
import { ApiError, type ErrorCode } from "../errors.js";
import type { Filter } from "../core/filter.js";

export type Ctx = z.RefinementCtx;

/** Adds an issue that will surface with the given CVM code. */
export function fail(ctx: Ctx, code: ErrorCode, message: string, path?: Array<string | number>): void {
  ctx.addIssue({ code: "custom", message, params: { apiCode: code }, ...(path ? { path } : {}) });
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  return path.map(String).join(".");
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/**
 * The JSON type of the value an issue is about (zod 4 keeps the value itself, in
 * `input`, when parsing with `reportInput`): "undefined" for a missing field, "null",
 * "array", or its typeof.
 */
function received(issue: z.core.$ZodIssue): string {
  const input = issue.input;
  if (input === null) return "null";
  if (Array.isArray(input)) return "array";
  return typeof input;
}

/** A required field that is absent (zod 4 reports a missing enum as invalid_value). */
function missing(issue: z.core.$ZodIssue): boolean {
  return (issue.code === "invalid_type" || issue.code === "invalid_value") && received(issue) === "undefined";
}

/** The offending value, short, for a message (String() throws on an object without a prototype). */
function shown(value: unknown): string {
  const text = typeof value === "string" ? `'${value}'` : (JSON.stringify(value) ?? String(value));
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function priority(issue: z.core.$ZodIssue): number {
  if (issue.code === "unrecognized_keys") return 0;
  if (missing(issue)) return 1;
  if (issue.code === "invalid_type") return 2;
  return 3;
}

/** Turns the most important zod issue into an ApiError. */
export function issueToApiError(issues: readonly z.core.$ZodIssue[]): ApiError {
  const issue = [...issues].sort((a, b) => priority(a) - priority(b))[0];
  if (!issue) return new ApiError("InvalidParameter", "the request parameters are invalid");
  const where = formatPath(issue.path);
  const named = (text: string) => (where ? `\`${where}\` ${text}` : text);
  if (missing(issue)) return new ApiError("MissingParameter", `missing parameter \`${where}\``);
  switch (issue.code) {
    case "unrecognized_keys": {
      const key = issue.keys[0] ?? "";
      return new ApiError("InvalidParameter", `unknown parameter \`${where ? `${where}.${key}` : key}\``);
    }
    case "invalid_type":
      // zod 4 reports a fractional number where an integer belongs as invalid_type "int".
      if (issue.expected === "int") return new ApiError("InvalidParameter", named(`must be an integer, got ${received(issue) === "number" ? "float" : received(issue)}`));
      return new ApiError("InvalidParameter", named(`must be ${article(issue.expected)}, got ${received(issue)}`));
    case "invalid_value":
      return new ApiError(
        "InvalidParameterValue",
        named(`must be one of ${issue.values.map((o) => `'${String(o)}'`).join(", ")}, got ${shown(issue.input)}`),
      );
    case "custom": {
      const code = (issue.params as { apiCode?: ErrorCode } | undefined)?.apiCode ?? "InvalidParameterValue";
      return new ApiError(code, named(issue.message));
    }
    default:
      return new ApiError("InvalidParameterValue", named(issue.message));
  }
}

/** Parses with a schema, or throws the translated ApiError. */
export function parseWith<S extends z.ZodTypeAny>(schema: S, body: unknown): z.output<S> {
  // reportInput: the issues carry the offending value, whose JSON type the messages name.
  const result = schema.safeParse(body, { reportInput: true });
  if (!result.success) throw issueToApiError(result.error.issues);
  return result.data as z.output<S>;
}

// ---------------------------------------------------------------------------
// Building blocks

export const ID_PATTERNS = {
  instance: /^ins-[a-z0-9]{8}$/,
  image: /^img-[a-z0-9]{8}$/,
  host: /^host-[a-z0-9]{8}$/,
  keyPair: /^skey-[a-z0-9]{8}$/,
  disk: /^disk-[a-z0-9]{8}$/,
  snapshot: /^snap-[a-z0-9]{8}$/,
} as const;

const ID_INFO = {
  instance: { prefix: "ins-", code: "InvalidInstanceId.Malformed", what: "instance" },
  image: { prefix: "img-", code: "InvalidImageId.Malformed", what: "image" },
  host: { prefix: "host-", code: "InvalidHostId.Malformed", what: "host" },
  keyPair: { prefix: "skey-", code: "InvalidKeyPairId.Malformed", what: "key" },
  disk: { prefix: "disk-", code: "InvalidDiskId.Malformed", what: "disk" },
  snapshot: { prefix: "snap-", code: "InvalidSnapshotId.Malformed", what: "snapshot" },
} as const satisfies Record<keyof typeof ID_PATTERNS, { prefix: string; code: ErrorCode; what: string }>;

export function idString(kind: keyof typeof ID_PATTERNS) {
  const info = ID_INFO[kind];
  return z.string().superRefine((value, ctx) => {
    if (!ID_PATTERNS[kind].test(value)) {
      fail(ctx, info.code, `'${value}' is not a valid ${info.what} ID (${info.prefix} followed by 8 lowercase letters or digits)`);
    }
  });
}

/** A list of IDs, 1..max items (max 100), duplicates removed by the caller. */
export function idList(kind: keyof typeof ID_PATTERNS, max = 100) {
  return z.array(idString(kind)).superRefine((list, ctx) => {
    if (list.length === 0) fail(ctx, "InvalidParameterValue", "must contain at least one ID");
    if (list.length > max) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${list.length} items; at most ${max} are allowed`);
  });
}

export function intInRange(min: number, max: number, code: ErrorCode = "InvalidParameterValue.Range") {
  return z
    .number()
    .int()
    .superRefine((v, ctx) => {
      if (v < min || v > max) fail(ctx, code, `must be between ${min} and ${max}, got ${v}`);
    });
}

/** A string of 1..max characters; longer → `tooLongCode`. */
export function boundedString(max: number, tooLongCode: ErrorCode = "InvalidParameterValue.TooLong") {
  return z.string().superRefine((v, ctx) => {
    const length = [...v].length;
    if (length === 0) fail(ctx, "InvalidParameterValue", "must not be empty");
    else if (length > max) fail(ctx, tooLongCode, `is ${length} characters long; at most ${max} are allowed`);
  });
}

/** A ProjectId: only the default project, 0, exists on a host; any other is InvalidProjectId.NotFound naming the field. */
export function defaultProjectOnly() {
  return z
    .number()
    .int()
    .superRefine((v, ctx) => {
      if (v !== 0) fail(ctx, "InvalidProjectId.NotFound", `project ${v} does not exist: this host has only the default project, 0`);
    });
}

/** Fields that CVM knows but this host agent does not implement: refused by name. */
export function unsupportedFields(names: readonly string[]): Record<string, z.ZodTypeAny> {
  const out: Record<string, z.ZodTypeAny> = {};
  for (const name of names) {
    out[name] = z
      .unknown()
      .superRefine((v, ctx) => {
        if (v !== undefined) fail(ctx, "InvalidParameterValue", "is not supported by this host agent");
      })
      .optional();
  }
  return out;
}

export type { Filter } from "../core/filter.js";

const MAX_FILTERS = 10;
const MAX_FILTER_VALUES = 100;

/**
 * Filters whose Name is one of `names`, or starts with one of `prefixes` followed by at least one
 * character (`tag:` for `tag:<key>`); an unknown Name → InvalidFilter.
 */
export function filterList<N extends string>(names: readonly N[], prefixes: readonly string[] = []) {
  const filter = z
    .object({
      Name: z.string(),
      Values: z.array(z.string()),
    })
    .strict()
    .superRefine((f, ctx) => {
      const prefixed = prefixes.some((p) => f.Name.startsWith(p) && f.Name.length > p.length);
      if (!(names as readonly string[]).includes(f.Name) && !prefixed) {
        const all = [...names, ...prefixes.map((p) => `${p}<key>`)];
        fail(ctx, "InvalidFilter", `'${f.Name}' is not a supported filter; use one of ${all.join(", ")}`, ["Name"]);
      }
      if (f.Values.length === 0) fail(ctx, "InvalidParameterValue", "must contain at least one value", ["Values"]);
      if (f.Values.length > MAX_FILTER_VALUES) {
        fail(ctx, "InvalidParameterValue.LimitExceeded", `has more than ${MAX_FILTER_VALUES} values`, ["Values"]);
      }
      f.Values.forEach((v, i) => {
        if (v === "") fail(ctx, "InvalidParameterValue", "must not be empty", ["Values", i]);
      });
    });
  return z.array(filter).superRefine((list, ctx) => {
    if (list.length > MAX_FILTERS) fail(ctx, "InvalidParameterValue.LimitExceeded", `has more than ${MAX_FILTERS} filters`);
  });
}

export function toFilters<N extends string>(raw: ReadonlyArray<{ Name: string; Values: string[] }> | undefined): Filter<N>[] {
  return (raw ?? []).map((f) => ({ name: f.Name as N, values: [...f.Values] }));
}

export const paging = {
  Offset: intInRange(0, 2_147_483_647).optional(),
  Limit: intInRange(1, 100).optional(),
};

export interface Paging {
  offset: number;
  limit: number;
}

export function toPaging(raw: { Offset?: number | undefined; Limit?: number | undefined }): Paging {
  return { offset: raw.Offset ?? 0, limit: raw.Limit ?? 20 };
}

export function unique<T>(list: readonly T[]): T[] {
  return [...new Set(list)];
}

/** The request body must be a JSON object. */
export const bodyObject = z.record(z.string(), z.unknown());
