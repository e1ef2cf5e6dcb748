#!/usr/bin/env bash
# Set-up command 2: installs what is missing (Debian packages, npm packages), starts a
# libvirtd inside the test network namespace, builds the guest images (cached), and
# runs every test inside that namespace, so that guest traffic, the agent's API and the
# metadata endpoint never leave it. Extra arguments go to vitest (e.g. --project unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
bash scripts/libvirtd-up.sh --netns cdhtest
# Images come from Debian's archive: build them (or reuse the cache) before entering
# the namespace, which has no route out.
bash scripts/build-tiny-image.sh >/dev/null
bash scripts/build-rescue-image.sh >/dev/null
for script in scripts/build-debian-image.sh; do
  [ -f "$script" ] && bash "$script" >/dev/null
done
npx tsc -p tsconfig.json --noEmit
exec ip netns exec cdhtest npx vitest run "$@"
