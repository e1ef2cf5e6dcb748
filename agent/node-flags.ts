/**
 * The V8 options the agent's node process is started with, and a check that they are
 * in effect.
 *
 * Why: V8's young generation (two semi-spaces) starts at 1 MiB each and grows, under
 * allocation, up to 16 MiB each on 64-bit Node 20, and is not given back while the
 * process stays busy now and then. Start-up recovery (a virsh child and a domain XML
 * parse per domain) and API listings allocate enough short-lived objects to grow it
 * to the maximum: with 200 instances 32 MiB of the agent's resident memory was an
 * empty young generation, against some 15 MiB of live heap. Capped at 2 MiB per
 * semi-space the agent stays well under its 100 MB budget; the agent's objects are
 * small and short-lived (requests, command results), so scavenges stay cheap.
 *
 * The old generation: V8 lets it grow, between full collections, to its live size times
 * a factor of up to 4 when its ceiling is 2 GiB or more (the default on a host with
 * 8 GiB of memory or more), and a limit computed after a collection is where the heap
 * stays resident. With 1,000 instances the live heap is some 25 MB and the heap grew to
 * 60 MB of mostly garbage between collections (bench (c): VmRSS 127 MiB). A ceiling of
 * 384 MiB takes the factor down to about 1.35 (V8 scales it from 1.3 at 256 MiB to 4 at
 * 2 GiB): 95 MiB in the same run otherwise (README, Benchmarks). 384 MiB is some 15 times
 * the heap with 1,000 instances; past it V8 stops the agent (out of memory), and systemd
 * restarts it.
 *
 * Where: the young generation is sized when the isolate is made, so the option must
 * be on node's command line (or in NODE_OPTIONS); it cannot be set from inside.
 * Every launcher passes these: systemd/cdh-agent.service, `npm start`, the `#!` line
 * of dist/agent/cli.js (the npm `bin`), the bench and the integration tests (the unit
 * test test/unit/node-flags.test.ts keeps the unit file and package.json in step).
 * The agent does not re-exec itself to add them: the re-executed agent would be a
 * child, and a SIGKILL to the process its supervisor started would leave it running
 * (still holding the API port, the journal and its guests' operations).
 */
export const AGENT_NODE_OPTIONS: readonly string[] = Object.freeze(["--max-semi-space-size=2", "--max-old-space-size=384"]);

/**
 * The options of AGENT_NODE_OPTIONS this process was not started with, looking at its
 * command-line options and NODE_OPTIONS (either spelling, `_` or `-`, counts; any value
 * counts, so an operator may choose another size).
 */
export function missingNodeOptions(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = [...execArgv, ...(nodeOptions ?? "").split(/\s+/)].map((a) => optionName(a));
  return AGENT_NODE_OPTIONS.filter((o) => !given.includes(optionName(o)));
}

function optionName(arg: string): string {
  return arg.split("=")[0]!.replaceAll("_", "-");
}
