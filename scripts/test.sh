#!/usr/bin/env bash
# Set-up command 2: installs what is missing (Debian packages, npm packages), brings up
# the test host `cdhtest` (its own network and mount namespaces, libvirt state, virtlogd
# and libvirtd; see scripts/libvirtd-up.sh), builds the guest images (cached), and runs
# every test inside that host (scripts/in-testns.sh), so that guest traffic, the agents'
# APIs and the metadata endpoint never leave it and nothing it defines reaches the
# machine's own libvirtd (an agent started with scripts/agent.sh keeps running).
# Extra arguments go to vitest (e.g. --project unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
bash scripts/libvirtd-up.sh --host cdhtest
# Images come from Debian's archive: build them (or reuse the cache) before entering
# the test host, which has no route out.
bash scripts/build-tiny-image.sh >/dev/null
bash scripts/build-rescue-image.sh >/dev/null
for script in scripts/build-debian-image.sh; do
  [ -f "$script" ] && bash "$script" >/dev/null
done
npm run typecheck --silent  # the agent and the tests (tsconfig.test.json)
exec bash scripts/in-testns.sh npx vitest run "$@"
