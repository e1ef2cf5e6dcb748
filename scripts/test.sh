#!/usr/bin/env bash
# Set-up command 2: installs what is missing (Debian packages, npm packages), starts a
# libvirtd inside the test network namespace, builds the tiny guest images (cached),
# and runs every test. Extra arguments go to vitest (e.g. a file or --project unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
bash scripts/libvirtd-up.sh --netns cdhtest
npx tsc -p tsconfig.json --noEmit
exec npx vitest run "$@"
