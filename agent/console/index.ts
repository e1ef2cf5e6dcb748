/**
 * The consoles, put together for main.ts: one token store, the access rules (access.ts), the
 * WebSocket gateway with the VNC route (gateway.ts, vnc.ts; the serial console adds its route
 * with `gateway.route(...)`), and the page (page.ts). `sideRoutes` is what the API listener
 * takes (agent/api/server.ts ApiSideRoutes).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { InstanceEntry } from "../instances/registry.js";
import type { InstanceState } from "../model.js";
import { ConsoleAccess } from "./access.js";
import { ConsoleGateway, type ConsoleLogger } from "./gateway.js";
import { consolePage } from "./page.js";
import { ConsoleTokens } from "./tokens.js";
import { vncRoute } from "./vnc.js";

export interface Consoles {
  readonly tokens: ConsoleTokens;
  readonly access: ConsoleAccess;
  readonly gateway: ConsoleGateway;
  readonly sideRoutes: {
    upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
    get(req: IncomingMessage, res: ServerResponse): boolean;
    close(): Promise<void>;
  };
}

export function createConsoles(o: {
  registry: { get(instanceId: string): InstanceEntry | undefined; stateOf(entry: InstanceEntry): InstanceState };
  /** The domain's VNC socket (DataPaths.vncSocket). */
  vncSocket: (instanceId: string) => string;
  /** Whether the API listener is TLS. */
  tls: boolean;
  /** console_url_base (undefined: the API request's Host). */
  urlBase?: string;
  /** console_allowed_origins. */
  extraOrigins: readonly string[];
  logger: ConsoleLogger;
}): Consoles {
  const tokens = new ConsoleTokens();
  const access = new ConsoleAccess({ tokens, registry: o.registry, tls: o.tls, ...(o.urlBase !== undefined ? { urlBase: o.urlBase } : {}) });
  const gateway = new ConsoleGateway({ tokens, logger: o.logger, tls: o.tls, extraOrigins: o.extraOrigins });
  gateway.route(vncRoute({ socketPath: o.vncSocket, unavailable: (id) => access.unavailable(id), logger: o.logger }));
  const page = consolePage();
  return {
    tokens,
    access,
    gateway,
    sideRoutes: {
      upgrade: (req, socket, head) => gateway.handleUpgrade(req, socket, head),
      get: (req, res) => page.handle(req, res),
      close: () => gateway.close(),
    },
  };
}
