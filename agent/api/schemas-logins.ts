/**
 * Key pair and login actions: ImportKeyPair, CreateKeyPair, DescribeKeyPairs,
 * DeleteKeyPairs, AssociateInstancesKeyPairs, DisassociateInstancesKeyPairs,
 * ResetInstancesPassword (reference/seeds-cvm-api.md §1.10, §1.11).
 *
 * What is checked here is the shape of each request: fields, JSON types, ID formats,
 * batch sizes (≤100), KeyName's rules with the seed's own codes. What needs state or
 * the guest's OS is checked later: the key pairs' existence and the project (the
 * KeyPairStore), the password rule (dispatch, with the image's or the instance's OS),
 * the public key's content (the store's OpenSSH parser).
 */
import { z } from "zod";
import { KEY_NAME, KEY_NAME_MAX, KEY_PAIR_FILTERS, type KeyPairFilterName } from "../logins/keypair-rules.js";
import { boundedString, fail, filterList, idList, paging, parseWith, toFilters, toPaging, unique, type Filter, type Paging } from "./schemas.js";

export type { KeyPairFilterName } from "../logins/keypair-rules.js";

export interface ImportKeyPairParams {
  keyName: string;
  projectId: number;
  /** As sent; parsed by the store. */
  publicKey: string;
}

export interface CreateKeyPairParams {
  keyName: string;
  projectId: number;
}

export interface DescribeKeyPairsParams extends Paging {
  /** Deduplicated; absent when not given. */
  keyIds?: string[];
  /** [] when absent. */
  filters: Filter<KeyPairFilterName>[];
}

export interface DeleteKeyPairsParams {
  keyIds: string[];
}

/** AssociateInstancesKeyPairs and DisassociateInstancesKeyPairs. */
export interface KeyBindingParams {
  instanceIds: string[];
  keyIds: string[];
  forceStop: boolean;
}

export interface ResetInstancesPasswordParams {
  instanceIds: string[];
  /** Checked for complexity by the dispatcher, which knows the OS. */
  password: string;
  userName?: string;
  forceStop: boolean;
}

/** KeyName with the seed's codes: empty, longer than 25, a character outside [A-Za-z0-9_]. */
const keyName = z.string().superRefine((v, ctx) => {
  const length = [...v].length;
  if (length === 0) fail(ctx, "InvalidKeyPairNameEmpty", "must not be empty");
  else if (length > KEY_NAME_MAX) fail(ctx, "InvalidKeyPairNameTooLong", `is ${length} characters long; at most ${KEY_NAME_MAX} are allowed`);
  else if (!KEY_NAME.test(v)) fail(ctx, "InvalidKeyPairNameIncludeIllegalChar", "may contain only letters, digits and underscore");
});

/** The seed marks ProjectId required for both creating actions; only 0 exists (the store says so). */
const projectId = z.number().int();

/**
 * Accepted so that CVM clients work, as long as it asks for no tag: key pairs carry no tags on
 * this host, so a TagSpecification with tags is refused naming them (an empty one asks nothing).
 */
const tagSpecification = z
  .array(
    z
      .object({
        ResourceType: z.string().superRefine((v, ctx) => {
          if (v !== "keypair") fail(ctx, "InvalidParameterValue", `must be keypair, got '${v}'`);
        }),
        Tags: z
          .array(z.unknown())
          .superRefine((tags, ctx) => {
            if (tags.length) fail(ctx, "InvalidParameterValue", "cannot hold tags: key pairs carry no tags on this host");
          })
          .optional(),
      })
      .strict(),
  )
  .optional();

const importSchema = z
  .object({ KeyName: keyName, ProjectId: projectId, PublicKey: z.string(), TagSpecification: tagSpecification })
  .strict();

export function parseImportKeyPair(body: unknown): ImportKeyPairParams {
  const r = parseWith(importSchema, body);
  return { keyName: r.KeyName, projectId: r.ProjectId, publicKey: r.PublicKey };
}

const createSchema = z.object({ KeyName: keyName, ProjectId: projectId, TagSpecification: tagSpecification }).strict();

export function parseCreateKeyPair(body: unknown): CreateKeyPairParams {
  const r = parseWith(createSchema, body);
  return { keyName: r.KeyName, projectId: r.ProjectId };
}

const describeSchema = z
  .object({ KeyIds: idList("keyPair").optional(), Filters: filterList(KEY_PAIR_FILTERS).optional(), ...paging })
  .strict()
  .superRefine((v, ctx) => {
    if (v.KeyIds !== undefined && v.Filters !== undefined) {
      fail(ctx, "InvalidParameterCombination", "KeyIds and Filters cannot be given together");
    }
  });

export function parseDescribeKeyPairs(body: unknown): DescribeKeyPairsParams {
  const r = parseWith(describeSchema, body);
  const params: DescribeKeyPairsParams = { ...toPaging(r), filters: toFilters<KeyPairFilterName>(r.Filters) };
  if (r.KeyIds) params.keyIds = unique(r.KeyIds);
  return params;
}

const deleteSchema = z.object({ KeyIds: idList("keyPair") }).strict();

export function parseDeleteKeyPairs(body: unknown): DeleteKeyPairsParams {
  return { keyIds: unique(parseWith(deleteSchema, body).KeyIds) };
}

const bindingSchema = z
  .object({ InstanceIds: idList("instance"), KeyIds: idList("keyPair"), ForceStop: z.boolean().optional() })
  .strict();

function parseKeyBinding(body: unknown): KeyBindingParams {
  const r = parseWith(bindingSchema, body);
  return { instanceIds: unique(r.InstanceIds), keyIds: unique(r.KeyIds), forceStop: r.ForceStop ?? false };
}

export const parseAssociateInstancesKeyPairs = parseKeyBinding;
export const parseDisassociateInstancesKeyPairs = parseKeyBinding;

const resetPasswordSchema = z
  .object({
    InstanceIds: idList("instance"),
    Password: z.string(),
    UserName: boundedString(64).optional(),
    ForceStop: z.boolean().optional(),
  })
  .strict();

export function parseResetInstancesPassword(body: unknown): ResetInstancesPasswordParams {
  const r = parseWith(resetPasswordSchema, body);
  const params: ResetInstancesPasswordParams = { instanceIds: unique(r.InstanceIds), password: r.Password, forceStop: r.ForceStop ?? false };
  if (r.UserName !== undefined) params.userName = r.UserName;
  return params;
}

/** The request schemas of this file's actions, by action (test/unit/api/fields.test.ts walks every field). */
export const LOGIN_REQUEST_SCHEMAS = {
  ImportKeyPair: importSchema,
  CreateKeyPair: createSchema,
  DescribeKeyPairs: describeSchema,
  DeleteKeyPairs: deleteSchema,
  AssociateInstancesKeyPairs: bindingSchema,
  DisassociateInstancesKeyPairs: bindingSchema,
  ResetInstancesPassword: resetPasswordSchema,
} as const;
