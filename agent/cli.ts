#!/usr/bin/env -S node --max-semi-space-size=2 --max-old-space-size=384
/**
 * cdh-agent's command line. `run` starts the daemon; `check-config` validates the
 * configuration and prints it (secrets hidden). This is the only module that reads
 * process.env and process.argv; everything else is handed a validated config.
 */
import { parseArgs } from "node:util";
import { NetworkConflictError } from "../drivers/libvirt/networks.js";
import { ConfigError, loadConfig, type AgentConfig } from "./config.js";
import { CredentialsFileError } from "./credentials-file.js";
import { createLogger } from "./log.js";
import { readMachineId } from "./machine-id.js";
import { AGENT_VERSION, startAgent } from "./main.js";
import { missingNodeOptions } from "./node-flags.js";

const USAGE = `usage: cdh-agent <command> [--config FILE]

commands:
  run            start the agent (the API, the libvirt driver, the reporter)
  check-config   validate the configuration and print it with secrets hidden
  version        print the version

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

async function main(argv: string[]): Promise<number> {
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
