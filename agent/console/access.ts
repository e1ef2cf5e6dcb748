/**
 * Who may have a console URL, and what it looks like. DescribeInstanceVncUrl (and the serial
 * console's action) ask here: the instance must be this host's and RUNNING (the seeds: "not
 * available for STOPPED instances"; every other state is refused with its own code), then a
 * one-time token (tokens.ts) goes into `<base>/<path>?s=<token>&InstanceId=<id>`.
 *
 * The base is console_url_base when configured (e.g. wss://agent.example:8443, the address
 * owners' browsers reach the agent at), otherwise the Host the API request came to, with wss
 * when the API is TLS and ws when it is not. The answer is percent-encoded, as the seeds'
 * InstanceVncUrl is: a console page takes it as-is in its `InstanceVncUrl` query parameter.
 */
import { DomainError } from "../core/errors.js";
import type { InstanceEntry } from "../instances/registry.js";
import type { InstanceState } from "../model.js";
import type { ConsoleKind, ConsoleTokens } from "./tokens.js";

export interface ConsoleAccessOptions {
  readonly tokens: ConsoleTokens;
  readonly registry: {
    get(instanceId: string): InstanceEntry | undefined;
    stateOf(entry: InstanceEntry): InstanceState;
  };
  /** Whether the API listener is TLS. */
  readonly tls: boolean;
  /** console_url_base: ws(s)://host[:port]; undefined = the API request's Host. */
  readonly urlBase?: string;
}

/** Host header values used to build a URL: a name or address, an optional port, nothing else. */
const HOST_RE = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

/** The URL path of each console kind (the gateway's routes). */
export const CONSOLE_PATHS: Readonly<Record<ConsoleKind, string>> = Object.freeze({ vnc: "/vnc", serial: "/serial" });

export class ConsoleAccess {
  constructor(private readonly o: ConsoleAccessOptions) {}

  /** Why an instance's console cannot be opened now, or undefined when it can. */
  unavailable(instanceId: string): string | undefined {
    const entry = this.o.registry.get(instanceId);
    if (!entry) return `instance ${instanceId} is no longer on this host`;
    const state = this.o.registry.stateOf(entry);
    return state === "RUNNING" ? undefined : `instance ${instanceId} is ${state}`;
  }

  /**
   * A one-time URL for a `kind` session on the instance, percent-encoded. Throws DomainError
   * InstanceNotFound, InstanceState (not RUNNING), BadValue (no usable host to put in the URL).
   */
  issueUrl(kind: ConsoleKind, instanceId: string, requestHost: string | undefined): string {
    const entry = this.o.registry.get(instanceId);
    if (!entry) throw new DomainError("InstanceNotFound", `no such instance on this host: ${instanceId}`);
    const state = this.o.registry.stateOf(entry);
    if (state !== "RUNNING") {
      throw new DomainError("InstanceState", `instance ${instanceId} is ${state}: its console is available while it is RUNNING`, { state });
    }
    const base = this.base(requestHost);
    const { token } = this.o.tokens.issue(kind, instanceId);
    // The instance ID rides along: the gateway refuses (and spends) the token for any other instance.
    return encodeURIComponent(`${base}${CONSOLE_PATHS[kind]}?s=${token}&InstanceId=${instanceId}`);
  }

  private base(requestHost: string | undefined): string {
    if (this.o.urlBase !== undefined) return this.o.urlBase;
    const host = requestHost?.trim();
    if (!host || !HOST_RE.test(host)) {
      throw new DomainError("BadValue", "the request's Host header cannot name the console's address; configure console_url_base");
    }
    return `${this.o.tls ? "wss" : "ws"}://${host}`;
  }
}
