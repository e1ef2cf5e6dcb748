#!/usr/bin/env bash
# Runs a command inside the test host: the network namespace (and, where set up, the
# mount namespace) in which the test libvirtd runs. Used by scripts/test.sh, the bench
# and by hand: `bash scripts/in-testns.sh virsh list --all`.
set -euo pipefail
exec ip netns exec cdhtest "$@"
