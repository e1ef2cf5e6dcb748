/** The host commands the baselines run (virsh, qemu-img), as argv arrays. */
import { execa } from "execa";

export const LIBVIRT_URI = "qemu:///system";

export interface Cmd {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a command; `check` (default true) throws on a non-zero exit. */
export async function run(argv: readonly string[], options: { check?: boolean; timeoutMs?: number; input?: string } = {}): Promise<Cmd> {
  const [file, ...args] = argv;
  const r = await execa(file!, args, {
    reject: false,
    timeout: options.timeoutMs ?? 120_000,
    ...(options.input !== undefined ? { input: options.input } : { stdin: "ignore" as const }),
  });
  const out: Cmd = { exitCode: r.exitCode ?? -1, stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? "") };
  if ((options.check ?? true) && out.exitCode !== 0) {
    throw new Error(`${argv.join(" ")} exited ${out.exitCode}: ${out.stderr.trim() || out.stdout.trim()}`);
  }
  return out;
}

export const virsh = (args: readonly string[], options: { check?: boolean; timeoutMs?: number } = {}) =>
  run(["virsh", "-c", LIBVIRT_URI, ...args], options);

/**
 * One virsh process running `commands` as a script ("a; b; c"). virsh runs every command
 * even when one fails; the final echo makes the exit status a success's.
 */
export const virshScript = (commands: readonly string[], options: { timeoutMs?: number } = {}) =>
  run(["virsh", "-c", LIBVIRT_URI, [...commands, "echo done"].join("; ")], { timeoutMs: options.timeoutMs ?? 300_000 });

/** Removes many domains whatever their state, one virsh script per 50 (names the bench made: no quoting needed). */
export async function removeDomains(names: readonly string[]): Promise<void> {
  for (const n of names) if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(n)) throw new Error(`domain name ${JSON.stringify(n)} cannot go into a virsh script`);
  for (let i = 0; i < names.length; i += 50) {
    await virshScript(names.slice(i, i + 50).flatMap((n) => [`destroy --domain ${n}`, `undefine --domain ${n} --nvram`]));
  }
  // What the script could not undefine with --nvram (a libvirt without it) goes one by one.
  const left = new Set(await domainNames());
  for (const n of names) if (left.has(n)) await removeDomain(n);
}

/** Removes a domain whatever its state; a missing domain is fine. */
export async function removeDomain(name: string): Promise<void> {
  await virsh(["destroy", name], { check: false });
  await virsh(["undefine", name, "--nvram"], { check: false }).then(async (r) => {
    if (r.exitCode !== 0) await virsh(["undefine", name], { check: false });
  });
}

/** Names of every domain libvirt knows (running or not). */
export async function domainNames(): Promise<string[]> {
  const r = await virsh(["list", "--all", "--name"]);
  return r.stdout.split("\n").map((s) => s.trim()).filter(Boolean);
}

/** Removes a libvirt network (stopped, then undefined); a missing network is fine. */
export async function removeNetwork(name: string): Promise<void> {
  await virsh(["net-destroy", name], { check: false });
  await virsh(["net-undefine", name], { check: false });
}
