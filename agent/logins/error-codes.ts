/**
 * The one way the login primitives build their API errors. Their codes (key pair
 * names, public keys, the key pair quota, projects — reference/seeds-cvm-api.md
 * §1.11, §3.2 "Key pairs") are part of agent/errors.ts's ERROR_CODES, so this is a
 * plain ApiError; it stays as a name the login modules share.
 */
import { ApiError, type ErrorCode } from "../errors.js";

/** An ApiError with a code from ERROR_CODES. */
export function loginError(code: ErrorCode, message: string, options?: { cause?: unknown }): ApiError {
  return new ApiError(code, message, options);
}
