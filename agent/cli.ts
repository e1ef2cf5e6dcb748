#!/usr/bin/env -S node --max-semi-space-size=2 --max-old-space-size=384
/**
 * cdh-agent's command line. `run` starts the daemon; `check-config` validates the
 * configuration and prints it (secrets hidden); the operator commands (agent/cli/: instances,
 * start, import, host, logs, …) speak to the local agent through its API. This is the only
 * module that reads process.env and process.argv (and the terminal's isTTY and the working
 * directory); everything else is handed a validated config, parsed arguments and an io.
 */
import { parseArgs } from "node:util";
import { readFile } from "node:fs/promises";
import { NetworkConflictError } from "../drivers/libvirt/networks.js";
import { commandName, EXIT, OPERATOR_COMMANDS, OPERATOR_USAGE, parseOperatorArgs, UsageError } from "./cli/args.js";
import { createApiClient } from "./cli/client.js";
import { runOperator } from "./cli/run.js";
import { ConfigError, loadConfig, type AgentConfig } from "./config.js";
import { CredentialsFileError, readCredentialsFile } from "./credentials-file.js";
import { DataPaths } from "./paths.js";
import { createLogger } from "./log.js";
import { readMachineId } from "./machine-id.js";
import { AGENT_VERSION, startAgent } from "./main.js";
import { missingNodeOptions } from "./node-flags.js";

const USAGE = `usage: cdh-agent <command> [--config FILE]

commands:
  run            start the agent (the API, the libvirt driver, the reporter)
  check-config   validate the configuration and print it with secrets hidden
  version        print the version

${OPERATOR_USAGE}

Every config key can be set in the JSON file (default /etc/cdh-agent/config.json)
or by an environment variable CDH_AGENT_<KEY>; see the README.`;

/**
 * Without a machine ID the host ID comes from host_id alone: loadConfig refuses to start
 * without either (two such hosts must never share a made-up ID).
 */
function load(file: string | undefined): AgentConfig {
  const machineId = readMachineId();
  return loadConfig({ ...(file ? { file } : {}), env: process.env, ...(machineId !== undefined ? { machineId } : {}) });
}

/** An operator command: config and credentials as the agent finds them, then one API client. */
async function operator(argv: string[]): Promise<number> {
  let invocation;
  try {
    invocation = parseOperatorArgs(argv, process.cwd());
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`cdh-agent: ${error.message} (cdh-agent --help lists the commands)`);
    return EXIT.USAGE;
  }
  let config: AgentConfig;
  let credential;
  let pinnedCertPem: string | undefined;
  try {
    config = load(invocation.config);
    const file = new DataPaths(config.dataDir).credentialsFile;
    credential = config.credentials[0] ?? (await readCredentialsFile(file));
    if (!credential) {
      console.error(`cdh-agent: no API credentials: none configured and ${file} does not exist (the agent writes it when it first starts)`);
      return EXIT.LOCAL_SETUP;
    }
    if (config.apiTls?.clientCaFile !== undefined) {
      console.error("cdh-agent: the agent asks for client certificates (api_tls_client_ca); the command line has none to present");
      return EXIT.LOCAL_SETUP;
    }
    if (config.apiTls) pinnedCertPem = await readFile(config.apiTls.certFile, "utf8");
  } catch (error) {
    if (error instanceof ConfigError || error instanceof CredentialsFileError) {
      console.error(`cdh-agent: ${error.message}`);
      return EXIT.LOCAL_SETUP;
    }
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== undefined) {
      console.error(`cdh-agent: api_tls_cert cannot be read: ${code}`);
      return EXIT.LOCAL_SETUP;
    }
    throw error;
  }
  const client = createApiClient({
    host: config.apiListen.host,
    port: config.apiListen.port,
    secretId: credential.secretId,
    secretKey: credential.secretKey,
    ...(pinnedCertPem !== undefined ? { pinnedCertPem } : {}),
  });
  // Ctrl-C ends `logs -f` with exit 0 (elsewhere it interrupts as usual).
  const stop = new AbortController();
  if (invocation.command.kind === "logs" && invocation.command.follow) process.once("SIGINT", () => stop.abort());
  return runOperator(invocation, {
    client,
    dataDir: config.dataDir,
    signal: stop.signal,
    terminal: { input: process.stdin, output: process.stdout, err: (text) => process.stderr.write(text) },
    io: {
      out: (text) => process.stdout.write(text),
      err: (text) => process.stderr.write(text),
      errIsTty: process.stderr.isTTY === true,
      outIsTty: process.stdout.isTTY === true,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      now: () => Date.now(),
    },
  });
}

async function main(argv: string[]): Promise<number> {
  const word = commandName(argv);
  if (word !== undefined && OPERATOR_COMMANDS.includes(word) && !argv.includes("--help") && !argv.includes("-h")) return operator(argv);
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } },
  });
  const command = positionals[0];
  if (values.help || !command) {
    console.log(USAGE);
    return command || values.help ? 0 : 2;
  }
  switch (command) {
    case "version":
      console.log(AGENT_VERSION);
      return 0;
    case "check-config": {
      const config = load(values.config);
      console.log(JSON.stringify({ ...config, credentials: config.credentials.map((c) => ({ secretId: c.secretId, secretKey: "[hidden]" })) }, null, 2));
      return 0;
    }
    case "run": {
      const config = load(values.config);
      const logger = createLogger({ level: config.logLevel, base: { hostId: config.hostId } });
      const missing = missingNodeOptions(process.execArgv, process.env.NODE_OPTIONS);
      if (missing.length) logger.warn({ missing }, "node was started without these options (see agent/node-flags.ts): the agent will use more memory");
      const agent = await startAgent({ config, logger });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, "stopping");
        agent.close().then(
          () => process.exit(0),
          (error: unknown) => {
            logger.error({ err: error }, "error while stopping");
            process.exit(1);
          },
        );
      };
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
      return -1; // keep running
    }
    default:
      console.error(`cdh-agent: unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    // Refusals to start are one line that says what to fix; anything else keeps its stack.
    if (error instanceof ConfigError || error instanceof CredentialsFileError || error instanceof NetworkConflictError) {
      console.error(`cdh-agent: ${error.message}`);
    } else console.error(`cdh-agent: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
