#!/usr/bin/env bash
# Installs what cdh-agent needs on a Debian 12 host, and only what is missing.
#   install-deps.sh            the agent's runtime packages
#   install-deps.sh --test     also what the test suite and benchmarks need
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

runtime=(libvirt-daemon-system libvirt-clients dnsmasq-base qemu-system-x86 qemu-utils genisoimage xorriso ovmf iproute2 nftables ca-certificates)
testing=(openssh-server openssh-client busybox-static syslinux syslinux-common extlinux mtools fdisk dosfstools cpio gzip
         debootstrap debian-archive-keyring e2fsprogs systemd nginx-light curl cloud-init wrk strace openssl
         chromium   # chromium: the VNC console page in a real browser (test/integration/vnc-console.test.ts)
         tmux)      # tmux: `cdh-agent console` in a real terminal (test/integration/serial-console.test.ts)
want=("${runtime[@]}")
[ "${1:-}" = "--test" ] && want+=("${testing[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The tests read guest documents with cloud-init's own code; cloud-init must never
  # configure this host itself.
  if printf '%s\n' "${missing[@]}" | grep -qx cloud-init; then
    mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "install-deps: Node.js 20 or later is required" >&2
  exit 1
fi
cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  # The lock file lists every platform's optional packages: a refusal is an error
  # (regenerate the lock file, README "Dependencies"), never a silent npm install.
  npm ci --no-audit --no-fund --loglevel=error
fi
