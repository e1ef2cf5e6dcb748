/**
 * CVM error codes the login primitives throw that agent/errors.ts's ERROR_CODES does
 * not list yet (reference/seeds-cvm-api.md §1.11, §3.2 "Key pairs"). They are meant to
 * be merged into ERROR_CODES; until then `loginError` is the one place that casts.
 *
 * Where the seed spells a code two ways (ImportKeyPair's own table has
 * `InvalidKeyPairNameDuplicate`, `InvalidPublicKeyMalformed`, …), the catalogue's
 * spelling is used for every action, so a client switches on one code.
 */
import { ApiError, type ErrorCode } from "../errors.js";

export const LOGIN_ERROR_CODES = Object.freeze({
  InvalidKeyPairNameEmpty: "KeyName is empty.",
  InvalidKeyPairNameTooLong: "KeyName is longer than 25 characters.",
  InvalidKeyPairNameIncludeIllegalChar: "KeyName contains a character other than letters, digits and underscore.",
  "InvalidKeyPairName.Duplicate": "A key pair with this name already exists on this host.",
  "InvalidPublicKey.Malformed": "PublicKey is not a single OpenSSH public key line of a supported type and size.",
  "InvalidPublicKey.Duplicate": "A key pair with this public key already exists on this host.",
  "InvalidKeyPair.LimitExceeded": "The host already holds the maximum number of key pairs.",
  "InvalidParameterValue.KeyPairNotSupported": "The key pair does not allow this operation (e.g. it is bound to an instance).",
  "InvalidProjectId.NotFound": "The project does not exist; this host knows only project 0.",
} as const);

export type LoginErrorCode = keyof typeof LOGIN_ERROR_CODES;

/** An ApiError with a code from ERROR_CODES or from LOGIN_ERROR_CODES above. */
export function loginError(code: ErrorCode | LoginErrorCode, message: string, options?: { cause?: unknown }): ApiError {
  return new ApiError(code as ErrorCode, message, options);
}
