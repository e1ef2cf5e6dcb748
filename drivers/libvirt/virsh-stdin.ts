/**
 * virsh sub-commands whose arguments can carry a secret, given to virsh on its standard
 * input instead of its argv (which any local user reads in /proc/PID/cmdline):
 * - `metadata --set XML`: the instance record (password hash, user data);
 * - `qemu-agent-command JSON`: guest-set-user-password carries the password.
 * virsh has no file option for either, but started without a command it reads commands
 * from standard input (its interactive mode, through readline). That mode has habits the
 * caller must undo, all handled here:
 * - it exits 0 whatever happened: a failure is the `error:` line a command prints on
 *   stderr, turned here into the ExecError a failed `virsh CMD` would have given;
 * - readline echoes the command after the prompt `virsh # ` on stdout: the command's
 *   own output is the lines between that echo and the next prompt;
 * - readline keeps a history file in $XDG_CACHE_HOME/libvirt/virsh/: it is pointed at a
 *   directory under the agent's data directory (0700), with VIRSH_HISTSIZE=0 (an empty
 *   file), so no command is written anywhere, nor the operator's own history touched;
 * - readline reads bytes as keys (TAB completes, DEL erases, and outside a UTF-8 locale
 *   8-bit bytes become Meta keys): the command must be printable ASCII, so callers encode
 *   other characters (asciiJson, asciiXml); TERM=dumb and INPUTRC=/dev/null make the key
 *   bindings and the echo the same on every host.
 * readline reads one byte per read(2): about 7 µs per character, 30 ms for a 4 KiB record.
 */
import { join } from "node:path";
import { ExecError, type CommandRunner, type RunResult } from "../exec/runner.js";

/** The sub-commands that go on standard input (their arguments may hold a secret). */
export const STDIN_SUBCOMMANDS: ReadonlySet<string> = new Set(["metadata", "qemu-agent-command"]);

/** Whether `virsh ARGS` must be given on standard input. */
export function goesOnStdin(args: readonly string[]): boolean {
  return STDIN_SUBCOMMANDS.has(args[0] ?? "");
}

/** The prompt of virsh's interactive mode on a read-write connection. */
const PROMPT = "virsh # ";

/** A command that cannot be written as one line of printable ASCII for virsh's reader. */
export class VirshLineError extends TypeError {
  override name = "VirshLineError";
}

/**
 * One command line for virsh's parser: every argument in single quotes (virsh's parser
 * takes them as a shell does: nothing inside is special; a quote is written '\'').
 */
export function virshCommandLine(args: readonly string[]): string {
  return args
    .map((arg, i) => {
      if (/[^\x20-\x7e]/.test(arg)) {
        throw new VirshLineError(`argument ${i} of virsh ${args[0] ?? ""} holds a character that is not printable ASCII`);
      }
      return `'${arg.replace(/'/g, `'\\''`)}'`;
    })
    .join(" ");
}

/** JSON.stringify, with every character outside printable ASCII written \uXXXX (same value). */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * XML with every character outside printable ASCII written as a character reference
 * (same document: libvirt stores the characters). Only for text and attribute values:
 * markup is ASCII already.
 */
export function asciiXml(xml: string): string {
  return xml.replace(/[^\x20-\x7e]/gu, (c) => `&#x${c.codePointAt(0)!.toString(16)};`);
}

export interface StdinVirshOptions {
  runner: CommandRunner;
  uri: string;
  /** A private directory (under the data directory) for virsh's readline state. */
  stateDir: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Runs `virsh ARGS` with ARGS on standard input. Resolves with the command's output as
 * stdout (the echo and prompts removed); rejects with the runner's ExecError (timeout,
 * abort, spawn) or with an ExecError of failure "exit" when virsh printed an error.
 */
export async function runVirshOnStdin(args: readonly string[], o: StdinVirshOptions): Promise<RunResult> {
  const line = virshCommandLine(args);
  const command = ["virsh", "-q", "-c", o.uri];
  const result = await o.runner.run(command, {
    input: `${line}\n`,
    env: {
      TERM: "dumb",
      INPUTRC: "/dev/null",
      VIRSH_HISTSIZE: "0",
      XDG_CACHE_HOME: join(o.stateDir, "virsh-state"),
    },
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const stdout = commandOutput(result.stdout);
  if (/^error:/m.test(result.stderr)) {
    // What `virsh CMD` exits with when CMD fails; the echo (the payload) is not kept.
    throw new ExecError({ command, exitCode: 1, stdout, stderr: result.stderr, failure: "exit" });
  }
  return { ...result, stdout };
}

/**
 * The output of the one command of an interactive virsh session: the lines after the
 * first prompt's line (the echo of the command) up to the next prompt.
 */
export function commandOutput(stdout: string): string {
  const lines = stdout.split("\n");
  const start = lines.findIndex((l) => l.startsWith(PROMPT));
  if (start < 0) return "";
  const out: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.startsWith(PROMPT)) break;
    out.push(l);
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`;
}
