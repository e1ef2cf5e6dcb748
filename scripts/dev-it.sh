#!/usr/bin/env bash
# Development helper: runs integration test files one run at a time on this machine
# (a lock serializes runs, since they share the test libvirtd), inside the test host,
# without stopping on type errors elsewhere in the tree (the build still emits).
#   bash scripts/dev-it.sh test/integration/power.test.ts [more vitest args]
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/cdh-it.lock env CDH_DEV_IGNORE_TSC=1 bash scripts/in-testns.sh npx vitest run --project integration "$@"
