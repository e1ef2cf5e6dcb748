import { StringDecoder } from "node:string_decoder";

/**
 * Splits a byte or text stream into lines. Chunks may end anywhere: in the middle of a
 * line or of a multi-byte UTF-8 character; the rest is kept until the next chunk.
 * A line is delivered without its "\n" (and without a "\r" before it).
 * With `splitOnCarriageReturn` a lone "\r" also ends a line (progress meters such as
 * `qemu-img convert -p` redraw one line with "\r"); empty lines are then not delivered.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private pending = "";
  private flushed = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly options: { splitOnCarriageReturn?: boolean } = {},
  ) {}

  push(chunk: Buffer | string): void {
    if (this.flushed) return;
    this.pending += typeof chunk === "string" ? chunk : this.decoder.write(chunk);
    if (this.options.splitOnCarriageReturn) {
      const parts = this.pending.split(/\r\n|\r|\n/);
      this.pending = parts.pop() ?? "";
      for (const part of parts) if (part.length > 0) this.onLine(part);
      return;
    }
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
    if (this.options.splitOnCarriageReturn) {
      for (const part of rest.split(/\r\n|\r|\n/)) if (part.length > 0) this.onLine(part);
      return;
    }
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
