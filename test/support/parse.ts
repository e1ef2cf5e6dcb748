/** Request parsing as the API edge does it: the parsed params, or the CVM refusal. */
import { parseCommand, type Command } from "../../agent/api/commands.js";
import { ApiError } from "../../agent/errors.js";

export function parse(action: string, body: unknown): Command["params"] {
  return parseCommand(action, body).params;
}

/** The code and message a body is refused with; throws when the body is accepted. */
export function refusal(action: string, body: unknown): { code: string; message: string } {
  try {
    parseCommand(action, body);
  } catch (e) {
    if (e instanceof ApiError) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error("the request was accepted");
}
