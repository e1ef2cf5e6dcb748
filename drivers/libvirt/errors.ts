/**
 * The one place that reads virsh's stderr: it turns a failed virsh command into
 * the typed errors of types.ts, always keeping the ExecError as `cause`.
 */
import { ExecError } from "../exec/runner.js";
import { DomainNotFoundError, DomainStateError, LibvirtError, LibvirtUnavailableError } from "./types.js";

/** What a virsh failure means, read from its stderr (libvirt 9.x wording). */
export type VirshFailureKind = "not-found" | "not-running" | "already-active" | "invalid-state" | "unavailable" | "other";

/**
 * Ordered: the first pattern that matches wins. "not running" comes before the
 * generic "Requested operation is not valid" because libvirt prints both on one line.
 */
const PATTERNS: ReadonlyArray<readonly [VirshFailureKind, RegExp]> = [
  // "error: failed to get domain 'x'", "Domain not found: no domain with matching name 'x'"
  ["not-found", /Domain not found|failed to get domain|no domain with matching (name|uuid|id)/i],
  // libvirtd gone, socket missing, connection dropped mid-call
  [
    "unavailable",
    /Failed to connect socket|failed to connect to the hypervisor|End of file while reading data|Cannot recv data|Cannot write data|Connection reset by peer|Broken pipe|no valid connection|Cannot read CA certificate/i,
  ],
  ["not-running", /domain is not running|is not running/i],
  ["already-active", /already active|domain is already running/i],
  ["invalid-state", /Requested operation is not valid|Timed out during operation|domain has no active/i],
];

export function classifyVirshStderr(stderr: string): VirshFailureKind {
  for (const [kind, pattern] of PATTERNS) {
    if (pattern.test(stderr)) return kind;
  }
  return "other";
}

/** The kind of a failure, when it is a virsh ExecError that exited; undefined otherwise. */
export function virshFailureKind(error: unknown): VirshFailureKind | undefined {
  if (!(error instanceof ExecError) || error.failure !== "exit") return undefined;
  return classifyVirshStderr(error.stderr);
}

/** A connection that was never made: the call cannot have reached libvirtd. */
const NEVER_CONNECTED = /Failed to connect socket|failed to connect to the hypervisor|no valid connection|Cannot read CA certificate/i;

/**
 * Whether a failed virsh call may still have changed the domain: it timed out, or the
 * connection to libvirtd broke after the call was sent. (`error` is the ExecError, or a
 * typed error carrying it as cause.) A refusal by libvirt, a failed spawn or a connection
 * never made are certain failures.
 */
export function mayHaveChanged(error: unknown): boolean {
  const exec = error instanceof ExecError ? error : error instanceof Error && error.cause instanceof ExecError ? error.cause : undefined;
  if (!exec) return false;
  if (exec.failure === "timeout") return true;
  if (exec.failure !== "exit" && exec.failure !== "signal") return false;
  return classifyVirshStderr(exec.stderr) === "unavailable" && !NEVER_CONNECTED.test(exec.stderr);
}

/** The meaningful part of virsh's stderr: its "error: …" lines, without the prefix. */
export function virshMessage(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const errors = lines.filter((l) => l.startsWith("error:")).map((l) => l.slice("error:".length).trim());
  return (errors.length > 0 ? errors : lines).join("; ") || "no error text";
}

/**
 * Maps any failure of a virsh call to a typed LibvirtError.
 * @param what a short description for the message, e.g. "start ins-abc12345"
 * @param domain the domain concerned, when there is one (for DomainNotFoundError)
 */
export function translateVirshError(error: unknown, what: string, domain?: string): LibvirtError {
  if (error instanceof LibvirtError) return error;
  if (!(error instanceof ExecError)) {
    return new LibvirtError(`virsh ${what} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  switch (error.failure) {
    case "spawn":
      return new LibvirtUnavailableError(`virsh ${what}: virsh could not be started`, { cause: error });
    case "timeout":
      // A libvirtd that does not answer in time is, for the agent, not available.
      return new LibvirtUnavailableError(`virsh ${what}: libvirt did not answer in time`, { cause: error });
    case "aborted":
      return new LibvirtError(`virsh ${what} was aborted`, { cause: error });
    case "signal":
    case "exit":
      break;
  }
  const message = `virsh ${what}: ${virshMessage(error.stderr)}`;
  const kind = classifyVirshStderr(error.stderr);
  switch (kind) {
    case "not-found":
      return domain !== undefined
        ? new DomainNotFoundError(domain, { cause: error })
        : new LibvirtError(message, { cause: error });
    case "unavailable":
      return new LibvirtUnavailableError(message, { cause: error });
    case "not-running":
    case "already-active":
    case "invalid-state":
      return new DomainStateError(message, { cause: error });
    case "other":
      return new LibvirtError(message, { cause: error });
  }
}
