/**
 * The operator commands' arguments, parsed into one typed command (pure: no I/O; the caller
 * hands in argv and the working directory). A wrong command line throws UsageError (exit 2).
 */
import { parseArgs } from "node:util";
import { isAbsolute, resolve, basename } from "node:path";
import { pathToFileURL } from "node:url";

/** The exit codes of every command (README "Command line"). */
export const EXIT = Object.freeze({
  /** Done. */
  OK: 0,
  /** The API answered with an error (its Code and Message are printed), or what was asked for does not exist or failed. */
  API_ERROR: 1,
  /** The command line is wrong. */
  USAGE: 2,
  /** The agent cannot be reached (not listening, TLS refused, no answer, not the API). */
  UNREACHABLE: 3,
  /** The local configuration or credentials file cannot be used. */
  LOCAL_SETUP: 4,
  /** A wait (import, --wait) passed its deadline; the operation may still finish. */
  TIMEOUT: 5,
});

export class UsageError extends Error {
  override readonly name = "UsageError";
}

export type PowerAction = "start" | "stop" | "reboot" | "terminate";

export type OperatorCommand =
  | { kind: "instances" }
  | { kind: "instance"; id: string }
  | { kind: "power"; action: PowerAction; ids: string[]; hard: boolean; wait: boolean; timeoutS: number }
  | { kind: "images" }
  | { kind: "import"; imageUrl: string; imageName: string; osType: string; osVersion: string; wait: boolean; timeoutS: number }
  | { kind: "host" }
  /** `follow`: keep printing what the guest writes until interrupted. */
  | { kind: "logs"; id: string; tail?: number; follow: boolean }
  /** The serial console in this terminal until Ctrl-] (agent/cli/console.ts). */
  | { kind: "console"; id: string }
  /** `count` undefined: until interrupted when stdout is a terminal, else once. */
  | { kind: "top"; intervalS: number; count?: number };

export interface OperatorInvocation {
  command: OperatorCommand;
  json: boolean;
  config?: string;
}

export const OPERATOR_COMMANDS: readonly string[] = Object.freeze(["instances", "instance", "start", "stop", "reboot", "terminate", "images", "import", "host", "logs", "console", "top"]);

export const OPERATOR_USAGE = `operator commands (they speak to the local agent through its API, with the
credentials the agent uses: secret_id/secret_key from the configuration, else
<data_dir>/api-credentials.json):
  instances                      the instances on this host
  instance ID                    one instance, every field
  start ID...  [--wait]          StartInstances
  stop ID...   [--hard] [--wait] StopInstances (--hard: StopType HARD; else SOFT)
  reboot ID... [--hard] [--wait] RebootInstances
  terminate ID... [--wait]       TerminateInstances
  images                         the images
  import FILE|URL [--name NAME] [--os-type Linux] [--os-version VERSION] [--no-wait]
                                 ImportImage, then a progress bar until it is NORMAL
  host                           DescribeHosts: capacity and state
  logs ID [--tail N] [-f]        the instance's serial console log (DescribeInstanceSerialLog);
                                 --tail N: its last N lines; -f: then what the guest writes, until Ctrl-C
  console ID                     the instance's serial console in this terminal
                                 (DescribeInstanceSerialConsoleUrl, a WebSocket); Ctrl-] leaves
  top [--interval S] [--count N] the running instances' CPU, memory, disk and network rates
                                 (GetMonitorData), redrawn every S seconds (default 10)
options: --json (the API's answer as JSON), --timeout SECONDS (waits; default 600 for
import, 300 for --wait), --config FILE
exit codes: 0 ok, 1 API error (Code and Message printed) or not found/failed,
  2 usage, 3 agent unreachable, 4 local configuration or credentials unusable,
  5 a wait passed its deadline`;

/** Instance IDs as the agent makes them (also keeps `logs` from reading outside the data directory). */
const INSTANCE_ID_RE = /^ins-[a-z0-9]{8}$/;

function instanceId(raw: string | undefined, command: string): string {
  if (raw === undefined) throw new UsageError(`${command} needs an instance ID`);
  if (!INSTANCE_ID_RE.test(raw)) throw new UsageError(`${JSON.stringify(raw)} is not an instance ID (ins- and 8 letters or digits)`);
  return raw;
}

function positiveInt(raw: string | undefined, option: string, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d{1,7}$/.test(raw) || Number(raw) < 1) throw new UsageError(`--${option} must be a whole number from 1`);
  return Number(raw);
}

/** FILE (relative to cwd) → file:// URL; http(s):// and file:// URLs as given. */
export function importUrl(source: string, cwd: string): string {
  if (/^(https?|file):\/\//i.test(source)) return source;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) throw new UsageError(`${JSON.stringify(source.split("://")[0])} URLs are not imported: give a FILE, an http(s):// or a file:// URL`);
  return pathToFileURL(isAbsolute(source) ? source : resolve(cwd, source)).href;
}

/** An image name from a file or URL: its base name without extensions, at most 60 characters. */
export function defaultImageName(source: string): string {
  const path = source.replace(/[?#].*$/, "");
  let base = basename(path.replace(/\/+$/, ""));
  try {
    base = decodeURIComponent(base);
  } catch {
    // a stray % stays as written
  }
  const ext = /\.(qcow2|raw|img|iso|vmdk|vhd|xz|gz|zst)$/i;
  while (ext.test(base)) base = base.replace(ext, "");
  return (base || "imported").slice(0, 60);
}

/** Parses argv (without node and the script) of an operator command; throws UsageError. */
export function parseOperatorArgs(argv: readonly string[], cwd: string): OperatorInvocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        json: { type: "boolean" },
        hard: { type: "boolean" },
        wait: { type: "boolean" },
        "no-wait": { type: "boolean" },
        timeout: { type: "string" },
        name: { type: "string" },
        "os-type": { type: "string" },
        "os-version": { type: "string" },
        tail: { type: "string" },
        follow: { type: "boolean", short: "f" },
        interval: { type: "string" },
        count: { type: "string" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const [name, ...rest] = positionals;
  const allowed: Record<string, readonly string[]> = {
    instances: [],
    instance: [],
    start: ["wait", "timeout"],
    stop: ["hard", "wait", "timeout"],
    reboot: ["hard", "wait", "timeout"],
    terminate: ["wait", "timeout"],
    images: [],
    import: ["name", "os-type", "os-version", "no-wait", "timeout"],
    host: [],
    logs: ["tail", "follow"],
    console: [],
    top: ["interval", "count"],
  };
  if (name === undefined || !(name in allowed)) throw new UsageError(`unknown command ${JSON.stringify(name ?? "")}`);
  for (const key of Object.keys(values)) {
    if (key === "config" || key === "json") continue;
    if (!allowed[name]!.includes(key)) throw new UsageError(`${name} takes no --${key}`);
  }
  const noMore = (n: number) => {
    if (rest.length > n) throw new UsageError(`${name} takes ${n === 0 ? "no arguments" : `${n} argument`}; got ${rest.length}`);
  };
  let command: OperatorCommand;
  switch (name) {
    case "instances":
    case "images":
    case "host":
      noMore(0);
      command = { kind: name };
      break;
    case "instance":
      noMore(1);
      command = { kind: "instance", id: instanceId(rest[0], name) };
      break;
    case "logs":
      noMore(1);
      if (values.follow === true && values.json === true) throw new UsageError("logs -f prints text; --json is for one read");
      command = { kind: "logs", id: instanceId(rest[0], name), follow: values.follow === true, ...(values.tail !== undefined ? { tail: positiveInt(values.tail, "tail", 0) } : {}) };
      break;
    case "console":
      noMore(1);
      if (values.json === true) throw new UsageError("console is a terminal session; it takes no --json");
      command = { kind: "console", id: instanceId(rest[0], name) };
      break;
    case "top":
      noMore(0);
      command = { kind: "top", intervalS: positiveInt(values.interval, "interval", 10), ...(values.count !== undefined ? { count: positiveInt(values.count, "count", 1) } : {}) };
      break;
    case "start":
    case "stop":
    case "reboot":
    case "terminate": {
      if (rest.length === 0) throw new UsageError(`${name} needs at least one instance ID`);
      if (rest.length > 100) throw new UsageError(`${name} takes at most 100 instance IDs at once`);
      const ids = rest.map((id) => instanceId(id, name));
      command = { kind: "power", action: name, ids: [...new Set(ids)], hard: values.hard === true, wait: values.wait === true, timeoutS: positiveInt(values.timeout, "timeout", 300) };
      break;
    }
    case "import": {
      noMore(1);
      const source = rest[0];
      if (source === undefined) throw new UsageError("import needs a FILE or URL");
      const imageUrl = importUrl(source, cwd);
      command = {
        kind: "import",
        imageUrl,
        imageName: values.name ?? defaultImageName(source),
        osType: values["os-type"] ?? "Linux",
        osVersion: values["os-version"] ?? "unknown",
        wait: values["no-wait"] !== true,
        timeoutS: positiveInt(values.timeout, "timeout", 600),
      };
      break;
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  }
  return { command, json: values.json === true, ...(values.config !== undefined ? { config: values.config } : {}) };
}

/** The command word of argv: the first argument that is neither an option nor --config's value. */
export function commandName(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--config" || a === "-c" || a === "--timeout" || a === "--name" || a === "--os-type" || a === "--os-version" || a === "--tail" || a === "--interval" || a === "--count") {
      i++;
      continue;
    }
    if (a === "--") return argv[i + 1];
    if (!a.startsWith("-")) return a;
  }
  return undefined;
}
