#!/usr/bin/env bash
# Set-up command 1: installs what is missing, makes sure libvirtd runs, builds the
# rescue system into /var/lib/cdh-agent/rescue (from Debian's archive), then starts
# the agent on its built-in defaults (configure with /etc/cdh-agent/config.json or
# CDH_AGENT_* variables).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/libvirtd-up.sh
# The rescue system that instances in rescue mode boot (cached: a no-op once built).
# Its default place is the agent's default rescue_kernel/rescue_initrd.
bash scripts/build-rescue-image.sh >/dev/null \
  || echo "agent.sh: the rescue system could not be built; EnterRescueMode will fail until it is" >&2
exec npm start --silent
