/**
 * One long-lived `virsh` shell, its commands written to its stdin, for a command the agent
 * runs again and again (the monitor's bulk statistics every interval): no process start and
 * no new libvirt connection per call, which is most of what one `virsh domstats` costs.
 *
 * Each call writes the command and two markers (`echo @@cdh-virsh-N@@` on stdout, `echo
 * --err` on stderr) and takes what the shell printed before them. Safety:
 * - one call at a time (a second while one runs is refused);
 * - every call has a deadline; at it, or at an abort, the shell is killed and the call fails;
 * - any "error:" on stderr before the marker fails the call, and the shell is killed too (a
 *   shell that lost its connection is never reused); the next call starts a new one;
 * - the shell exiting fails the call under way.
 * A failed call throws an ExecError (failure timeout, aborted, exit or spawn), as a one-off
 * `virsh` would, so translateVirshError reads it the same way.
 */
import { ExecError, type CommandRunner, type StreamHandle } from "../exec/runner.js";

/** The shell's prompt, echoed with each command it reads from a pipe (`virsh # ` as root, `virsh $ ` otherwise). */
const PROMPT = /^virsh [#$] /;
/** What may be written to the shell: plain words only (no quoting, no `;`, no newline). */
const WORD = /^[A-Za-z0-9._:=/@-]+$/;

interface Call {
  marker: string;
  out: string[];
  err: string[];
  outDone: boolean;
  errDone: boolean;
  resolve: (stdout: string[]) => void;
  reject: (error: Error) => void;
}

export class VirshSession {
  private handle: StreamHandle | undefined;
  private call: Call | undefined;
  private seq = 0;
  private generation = 0;
  private closed = false;

  constructor(private readonly o: { runner: CommandRunner; uri: string }) {}

  /** Runs one command (argv words after `virsh`); resolves with its stdout lines (with the command line itself first where the shell echoes it). */
  async run(args: readonly string[], timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
    const command = ["virsh", "-c", this.o.uri, ...args];
    const fail = (failure: "timeout" | "aborted" | "exit" | "spawn", stderr = "", cause?: unknown) =>
      new ExecError({ command, exitCode: failure === "exit" ? 1 : null, stdout: "", stderr, failure, cause });
    if (this.closed) throw fail("aborted");
    if (this.call) throw new Error("virsh session: a call is already under way");
    for (const a of args) if (!WORD.test(a)) throw new Error(`virsh session: ${JSON.stringify(a)} is not a plain word`);
    if (signal?.aborted) throw fail("aborted");
    const handle = this.handle ?? this.spawn();
    const marker = `@@cdh-virsh-${++this.seq}@@`;
    return new Promise<string[]>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.call = undefined;
      };
      const timer = setTimeout(() => {
        done();
        this.restart();
        reject(fail("timeout"));
      }, timeoutMs);
      const onAbort = () => {
        done();
        this.restart();
        reject(fail("aborted"));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.call = {
        marker,
        out: [],
        err: [],
        outDone: false,
        errDone: false,
        resolve: (lines) => {
          done();
          resolve(lines);
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
      if (!handle.write?.(`${args.join(" ")}\necho ${marker}\necho --err ${marker}\n`)) {
        this.call.reject(fail("spawn", "", new Error("the virsh shell's stdin is closed")));
        this.restart();
      }
    });
  }

  /** Stops the shell; later calls fail. */
  close(): void {
    this.closed = true;
    this.restart();
  }

  private spawn(): StreamHandle {
    // What a shell killed on purpose still prints, or its exit, never reaches a later call.
    const generation = ++this.generation;
    const current = () => this.generation === generation;
    const handle = this.o.runner.stream(["virsh", "-q", "-c", this.o.uri], {
      stdin: "pipe",
      onLine: (line) => current() && this.onOut(line),
      onStderrLine: (line) => current() && this.onErr(line),
      onExit: (info) => {
        if (!current()) return;
        this.generation++;
        this.handle = undefined;
        const call = this.call;
        if (call) {
          const stderr = call.err.join("\n");
          call.reject(new ExecError({ command: ["virsh", "-c", this.o.uri], exitCode: info.exitCode, signal: info.signal, stdout: "", stderr, failure: info.error ? "spawn" : "exit", cause: info.error }));
        }
      },
    });
    if (!handle.write) {
      handle.kill();
      throw new Error("virsh session: the command runner cannot feed a command's stdin");
    }
    this.handle = handle;
    return handle;
  }

  /** Kills the shell (the next call starts another). */
  private restart(): void {
    const h = this.handle;
    this.handle = undefined;
    this.generation++;
    h?.kill();
  }

  private onOut(line: string): void {
    const call = this.call;
    if (!call || call.outDone) return;
    const at = line.indexOf(call.marker);
    if (at >= 0) {
      call.outDone = true;
      this.settle(call);
      return;
    }
    // The prompt (with the command it read, where the shell echoes it) is cut off, not the line:
    // a shell that does not echo prints its prompt before the command's first line.
    call.out.push(line.replace(PROMPT, ""));
  }

  private onErr(line: string): void {
    const call = this.call;
    if (!call || call.errDone) return;
    if (line.includes(call.marker)) {
      call.errDone = true;
      this.settle(call);
      return;
    }
    if (line.trim() !== "") call.err.push(line);
  }

  private settle(call: Call): void {
    if (!call.outDone || !call.errDone) return;
    if (call.err.some((l) => l.startsWith("error:"))) {
      const stderr = call.err.join("\n");
      // A shell that reported an error (a lost connection, …) is not trusted with the next call.
      this.restart();
      call.reject(new ExecError({ command: ["virsh", "-c", this.o.uri], exitCode: 1, stdout: call.out.join("\n"), stderr, failure: "exit" }));
      return;
    }
    call.resolve(call.out);
  }
}
