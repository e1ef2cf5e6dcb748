#!/usr/bin/env bash
# Runs a command inside a test host: its network namespace and its mount namespace (with
# its own /run/libvirt, /etc/libvirt, … and the libvirtd serving qemu:///system there),
# bringing the host up first if it is not (scripts/libvirtd-up.sh --host NAME; a no-op
# when its libvirtd answers). Used by scripts/test.sh, scripts/dev-it.sh, the bench and by
# hand:
#   bash scripts/in-testns.sh virsh list --all
#   bash scripts/in-testns.sh --host cdhtest2 virsh net-list     (another test host)
# The host is cdhtest unless --host or CDH_TEST_HOST names another. The command keeps the
# current directory and environment, plus CDH_TEST_HOST (the host's name) and
# CDH_MACHINE_NS_PID: this script's process, which waits in the machine's own namespaces
# while the command runs (`nsenter -t $CDH_MACHINE_NS_PID -m -n -- CMD` runs CMD there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
host=${CDH_TEST_HOST:-cdhtest}
if [ "${1:-}" = --host ]; then host=${2:?--host needs a name}; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [--host NAME] COMMAND [ARG...]" >&2; exit 2; }
export CDH_TEST_HOST=$host
# Already inside that host (a nested call): run the command here.
case "$(findmnt -n -o SOURCE /run/libvirt 2>/dev/null)" in
  *"/run/cdh-hosts/$host.run]"*) exec "$@" ;;
esac
bash "$here/libvirtd-up.sh" --host "$host" >&2
export CDH_MACHINE_NS_PID=$$
nsenter --net="/run/netns/$host" --mount="/run/cdh-hosts/$host.mnt" --wd="$PWD" -- "$@"
