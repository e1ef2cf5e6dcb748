#!/usr/bin/env bash
# Set-up command 1: installs what is missing, makes sure libvirtd runs, then starts
# the agent on its built-in defaults (configure with /etc/cdh-agent/config.json or
# CDH_AGENT_* variables).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/libvirtd-up.sh
exec npm start --silent
