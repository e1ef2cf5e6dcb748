/**
 * The one way the login primitives build their errors: domain errors (agent/core/errors.ts)
 * whose CVM codes (key pair names, public keys, the key pair quota, projects —
 * reference/seeds-cvm-api.md §1.11, §3.2 "Key pairs") the API edge's error map gives.
 */
import { DomainError, type DomainErrorKind } from "../core/errors.js";

/** A DomainError of the login primitives. */
export function loginError(kind: DomainErrorKind, message: string, options?: { cause?: unknown }): DomainError {
  return new DomainError(kind, message, {}, options);
}
