/**
 * The request rules of the key pair actions, with the seed's error codes
 * (reference/seeds-cvm-api.md §1.11): name shape, project, ID shapes, batch sizes.
 * Pure; used by KeyPairStore and usable by the API edge.
 */
import { loginError } from "./error-codes.js";

export const KEY_NAME_MAX = 25;
export const DESCRIPTION_MAX = 60;
export const BATCH_MAX = 100; // InstanceIds / KeyIds per request
export const KEY_PAIR_FILTERS = ["key-id", "key-name", "project-id", "tag-key", "tag-value"] as const;
export type KeyPairFilterName = (typeof KEY_PAIR_FILTERS)[number];

export const KEY_ID = /^skey-[a-z0-9]{8}$/;
export const INSTANCE_ID = /^ins-[a-z0-9]{8}$/;
export const KEY_NAME = /^[A-Za-z0-9_]+$/;

/** KeyName rules with the seed's codes: required, ≤25 characters, letters/digits/underscore. */
export function checkKeyName(keyName: string): void {
  if (keyName.length === 0) throw loginError("KeyNameEmpty", "KeyName must not be empty");
  if ([...keyName].length > KEY_NAME_MAX) {
    throw loginError("KeyNameTooLong", `KeyName is longer than ${KEY_NAME_MAX} characters`);
  }
  if (!KEY_NAME.test(keyName)) {
    throw loginError("KeyNameBadChar", "KeyName may contain only letters, digits and underscore");
  }
}

export function checkProjectId(projectId: number | undefined): number {
  const id = projectId ?? 0;
  if (id !== 0) throw loginError("ProjectNotFound", `project ${id} does not exist; this host has only project 0`);
  return id;
}

export function checkBatch(
  name: string,
  ids: readonly string[],
  shape: RegExp,
  malformed: "KeyPairIdMalformed" | "InstanceIdMalformed",
  prefix: string,
  mayBeEmpty: boolean,
): void {
  if (ids.length === 0 && !mayBeEmpty) throw loginError("MissingValue", `${name} must name at least one ID`);
  if (ids.length > BATCH_MAX) {
    throw loginError("TooMany", `${name} has ${ids.length} items; at most ${BATCH_MAX} are allowed`);
  }
  for (const id of ids) {
    if (!shape.test(id)) {
      throw loginError(malformed, `${JSON.stringify(id.slice(0, 40))} is not ${prefix} followed by 8 lowercase letters or digits`);
    }
  }
}
