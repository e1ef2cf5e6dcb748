#!/usr/bin/env bash
# Makes sure a system libvirtd answers on qemu:///system.
#   libvirtd-up.sh                 start libvirtd (and virtlogd) if none runs
#   libvirtd-up.sh --netns NAME    run them inside network namespace NAME (created
#                                  if missing), restarting a libvirtd that runs elsewhere:
#                                  bridges and guest traffic then live only in NAME
#   libvirtd-up.sh --restart ...   stop a running libvirtd first
set -euo pipefail
netns="" restart=0
while [ $# -gt 0 ]; do
  case "$1" in
    --netns) netns="$2"; shift 2 ;;
    --restart) restart=1; shift ;;
    *) echo "usage: $0 [--netns NAME] [--restart]" >&2; exit 2 ;;
  esac
done

# Debian's udev rule makes /dev/kvm root:kvm 0660, and libvirt-qemu is in group kvm.
# Hosts without udev (containers, these CI machines) leave it root 0600; libvirt 9
# then probes QEMU with KVM but finds KVM unusable for its QEMU user afterwards, and
# throws its capability cache away on every call (each define takes a minute).
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %a /dev/kvm)" = 600 ]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  echo "libvirtd-up: /dev/kvm was root-only; made it root:kvm 0660 as Debian's udev rule does"
fi

running_pid() { pgrep -x libvirtd | head -n1 || true; }
ns_of() { ip netns identify "$1" 2>/dev/null || true; }

# With systemd as PID 1 the service manager owns libvirtd.
if [ -z "$netns" ] && [ -d /run/systemd/system ]; then
  systemctl start libvirtd.service virtlogd.service
  exit 0
fi

pid=$(running_pid)
if [ -n "$pid" ]; then
  if [ "$restart" = 1 ] || { [ -n "$netns" ] && [ "$(ns_of "$pid")" != "$netns" ]; }; then
    kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    pid=""
  fi
fi

exec_in=()
if [ -n "$netns" ]; then
  ip netns list | grep -qw "^$netns" || ip netns add "$netns"
  ip netns exec "$netns" ip link set lo up
  exec_in=(ip netns exec "$netns")
fi
pgrep -x virtlogd >/dev/null || "${exec_in[@]}" virtlogd -d
if [ -z "$pid" ]; then
  rm -f /run/libvirtd.pid
  "${exec_in[@]}" libvirtd -d
fi
for _ in $(seq 100); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "libvirtd-up: libvirtd did not answer on qemu:///system" >&2
exit 1
