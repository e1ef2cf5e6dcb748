/** Log sinks for unit tests: what a logger wrote, line by line. */
import { Writable } from "node:stream";
import type { ApiLogger } from "../../agent/api/server.js";

/** A stream for createLogger's destination that keeps every JSON line written to it. */
export function captureLines() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...String(chunk).split("\n").filter((l) => l !== ""));
      cb();
    },
  });
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { lines, records, destination };
}

export interface LogLine {
  level: string;
  obj: Record<string, unknown>;
  msg?: string;
}

/** An ApiLogger that records each call, child bindings merged in. */
export function recordingLogger(lines: LogLine[]): ApiLogger {
  const make = (bindings: Record<string, unknown>): ApiLogger => ({
    child: (more) => make({ ...bindings, ...more }),
    debug: (obj, msg) => lines.push({ level: "debug", obj: { ...bindings, ...obj }, msg }),
    info: (obj, msg) => lines.push({ level: "info", obj: { ...bindings, ...obj }, msg }),
    warn: (obj, msg) => lines.push({ level: "warn", obj: { ...bindings, ...obj }, msg }),
    error: (obj, msg) => lines.push({ level: "error", obj: { ...bindings, ...obj }, msg }),
  });
  return make({});
}
