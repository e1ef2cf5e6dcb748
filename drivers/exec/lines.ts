import { StringDecoder } from "node:string_decoder";

/**
 * Splits a byte or text stream into lines. Chunks may end anywhere: in the middle of a
 * line or of a multi-byte UTF-8 character; the rest is kept until the next chunk.
 * A line is delivered without its "\n" (and without a "\r" before it).
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private pending = "";
  private flushed = false;

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: Buffer | string): void {
    if (this.flushed) return;
    this.pending += typeof chunk === "string" ? chunk : this.decoder.write(chunk);
    let newline = this.pending.indexOf("\n");
    while (newline !== -1) {
      const line = this.pending.slice(0, newline);
      this.pending = this.pending.slice(newline + 1);
      this.onLine(stripCr(line));
      newline = this.pending.indexOf("\n");
    }
  }

  /** Delivers the last partial line, if any. Idempotent: later pushes are ignored. */
  flush(): void {
    if (this.flushed) return;
    this.flushed = true;
    const rest = this.pending + this.decoder.end();
    this.pending = "";
    if (rest.length > 0) this.onLine(stripCr(rest));
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Calls a line callback, keeping a throwing callback from breaking the stream. */
export function safeLineCallback(
  callback: ((line: string) => void) | undefined,
  onCallbackError: (error: unknown) => void,
): (line: string) => void {
  return (line) => {
    if (!callback) return;
    try {
      callback(line);
    } catch (error) {
      onCallbackError(error);
    }
  };
}
