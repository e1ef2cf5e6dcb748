#!/usr/bin/env bash
# Makes sure a libvirtd answers on qemu:///system, either the machine's own or a test host's.
#
#   libvirtd-up.sh                       the machine's libvirtd (root namespaces), the one the
#                                        agent uses: started (with virtlogd) if none runs there.
#                                        A test host's libvirtd is never touched.
#   libvirtd-up.sh --restart             stop the machine's libvirtd first
#   libvirtd-up.sh --host NAME           test host NAME (e.g. cdhtest): its own network
#                                        namespace /run/netns/NAME and its own mount namespace
#                                        /run/cdh-hosts/NAME.mnt, in which /run/libvirt,
#                                        /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and
#                                        /var/log/libvirt are private (kept in
#                                        /var/lib/cdh-hosts/NAME; /etc/libvirt seeded from the
#                                        packages' defaults, without libvirt's `default` network),
#                                        with its own virtlogd and libvirtd. A live one is reused.
#   libvirtd-up.sh --netns NAME          the same as --host NAME (the old spelling)
#   libvirtd-up.sh --host NAME --restart restart that host's libvirtd (guests keep running)
#   libvirtd-up.sh --host NAME --down    stop that host: its guests, networks, daemons and
#                                        namespaces (its definitions stay for the next start)
#
# Run a command inside a test host with scripts/in-testns.sh. Starting, restarting or
# stopping cdhtest's daemons takes the machine-wide lock /tmp/cdh-it.lock (the one
# scripts/dev-it.sh holds while tests run; another host NAME: /tmp/cdh-it-NAME.lock),
# unless an ancestor of this script holds it.
# Run from inside a test host, the script acts from the machine's root namespaces.
set -euo pipefail
script=$(readlink -f "$0")
args=("$@")

host="" restart=0 down=0
while [ $# -gt 0 ]; do
  case "$1" in
    --host|--netns) host="${2:?$1 needs a name}"; shift 2 ;;
    --restart) restart=1; shift ;;
    --down) down=1; shift ;;
    -h|--help) sed -n '2,25p' "$script"; exit 0 ;;
    *) echo "usage: $0 [--host NAME [--down]] [--restart]" >&2; exit 2 ;;
  esac
done
if [ -n "$host" ] && ! [[ "$host" =~ ^[a-z][a-z0-9-]{0,14}$ ]]; then
  echo "libvirtd-up: a host name is a lowercase letter, then up to 14 letters, digits or '-'" >&2
  exit 2
fi
[ "$down" = 0 ] || [ -n "$host" ] || { echo "libvirtd-up: --down needs --host NAME" >&2; exit 2; }

log() { echo "libvirtd-up: $*" >&2; }
# Inside a test host (or any network namespace of /run/netns)? Global set-up and tests that
# restart libvirtd call this script from there; it then acts from the machine's namespaces,
# which scripts/in-testns.sh names with CDH_MACHINE_NS_PID (a process of its own there).
inside_test_host() {
  local self f
  case "$(findmnt -n -o SOURCE /run/libvirt 2>/dev/null)" in *"/run/cdh-hosts/"*) return 0 ;; esac
  self=$(readlink /proc/self/ns/net | tr -dc 0-9)
  for f in /run/netns/*; do [ -e "$f" ] && [ "$(stat -L -c %i "$f")" = "$self" ] && return 0; done
  return 1
}
if inside_test_host; then
  m=${CDH_MACHINE_NS_PID:-}
  if [ -n "$m" ] && [ -r "/proc/$m/ns/mnt" ] && [ "$(readlink "/proc/$m/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]; then
    exec nsenter -t "$m" -m -n -- bash "$script" "${args[@]}"
  fi
  if [ -n "$host" ] && [ "$restart" = 0 ] && [ "$down" = 0 ] && timeout 20 virsh -c qemu:///system version >/dev/null 2>&1; then
    exit 0 # the host's libvirtd answers; nothing to do
  fi
  log "run this from the machine's namespaces, or through scripts/in-testns.sh (which sets CDH_MACHINE_NS_PID)"
  exit 1
fi

inode() { stat -L -c %i "$1" 2>/dev/null || true; }
ns_inode() { readlink "/proc/$1/ns/$2" 2>/dev/null | tr -dc 0-9; }
uri=qemu:///system

# Debian's udev rule makes /dev/kvm root:kvm 0660, and libvirt-qemu is in group kvm.
# Hosts without udev (containers, these CI machines) leave it root 0600; libvirt 9
# then probes QEMU with KVM but finds KVM unusable for its QEMU user afterwards, and
# throws its capability cache away on every call (each define takes a minute).
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %a /dev/kvm)" = 600 ]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  log "/dev/kvm was root-only; made it root:kvm 0660 as Debian's udev rule does"
fi

# Starts a daemon with no open file but 0-2: it must not keep a lock (flock(1) passes its
# lock to the command it runs, e.g. scripts/dev-it.sh's) or a pipe of the caller.
daemon() {
  (
    for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
    exec "$@" </dev/null
  )
}

stop_pid() { # PID: TERM, up to 5 s, then KILL
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# --- the machine's libvirtd (root namespaces) -------------------------------------------
if [ -z "$host" ]; then
  # With systemd as PID 1 the service manager owns libvirtd.
  if [ -d /run/systemd/system ]; then
    if [ "$restart" = 1 ]; then systemctl restart libvirtd.service; fi
    systemctl start virtlogd.service libvirtd.service
    exit 0
  fi
  root_net=$(ns_inode self net) root_mnt=$(ns_inode self mnt)
  in_root() { [ "$(ns_inode "$1" net)" = "$root_net" ] && [ "$(ns_inode "$1" mnt)" = "$root_mnt" ]; }
  pid=""
  for p in $(pgrep -x libvirtd || true); do in_root "$p" && pid=$p; done
  if [ -n "$pid" ] && [ "$restart" = 1 ]; then stop_pid "$pid"; pid=""; fi
  vl=""
  for p in $(pgrep -x virtlogd || true); do in_root "$p" && vl=$p; done
  # Pid files a daemon of the root namespaces left behind when it died.
  [ -n "$vl" ] || { rm -f /run/virtlogd.pid; daemon virtlogd -d; }
  [ -n "$pid" ] || { rm -f /run/libvirtd.pid; daemon libvirtd -d; }
  for _ in $(seq 150); do
    virsh -c "$uri" version >/dev/null 2>&1 && exit 0
    sleep 0.2
  done
  log "libvirtd did not answer on $uri"
  exit 1
fi

# --- a test host ------------------------------------------------------------------------
hosts_run=/run/cdh-hosts
state=/var/lib/cdh-hosts/$host
netns_file=/run/netns/$host
mnt_file=$hosts_run/$host.mnt
ids_file=$hosts_run/$host.ids # "NET_INODE MNT_INODE" of the namespaces this script made
run_dir=$hosts_run/$host.run  # becomes /run/libvirt inside the host
# cdhtest's lock is the one scripts/dev-it.sh holds while tests run; other hosts have their own.
lock=/tmp/cdh-it.lock
[ "$host" = cdhtest ] || lock=/tmp/cdh-it-$host.lock

have_netns() { [ -e "$netns_file" ] && [ "$(findmnt -n -o FSTYPE --target "$netns_file" 2>/dev/null | tail -n1)" = nsfs ]; }
have_mntns() { [ -e "$mnt_file" ] && [ "$(findmnt -n -o FSTYPE "$mnt_file" 2>/dev/null | tail -n1)" = nsfs ]; }
in_host() { nsenter --net="$netns_file" --mount="$mnt_file" -- "$@"; }
host_net() { if have_netns; then inode "$netns_file"; fi; }
host_mnt() { if have_mntns; then inode "$mnt_file"; fi; }

# Processes named $1 whose network namespace is $2 (an inode).
procs_in_net() {
  local p
  for p in $(pgrep -x "$1" || true); do [ "$(ns_inode "$p" net)" = "$2" ] && echo "$p"; done
  return 0
}
# The host's libvirtd, started by this script: in both of the host's namespaces.
host_libvirtd() {
  local net mnt p
  net=$(host_net) mnt=$(host_mnt)
  [ -n "$net" ] && [ -n "$mnt" ] || return 0
  for p in $(procs_in_net libvirtd "$net"); do [ "$(ns_inode "$p" mnt)" = "$mnt" ] && echo "$p"; done
  return 0
}
answers() { have_mntns && have_netns && in_host timeout 20 virsh -c "$uri" version >/dev/null 2>&1; }

live() {
  local pid
  pid=$(host_libvirtd | head -n1)
  [ -n "$pid" ] || return 1
  # A frozen libvirtd (SIGSTOP, as the fault tests do) is alive: wait for it, never replace it.
  for _ in $(seq 120); do
    [ "$(ps -o state= -p "$pid" 2>/dev/null | tr -d ' ')" = T ] || break
    [ "${waited_frozen:-}" ] || { log "$host's libvirtd ($pid) is stopped (SIGSTOP); waiting for it"; waited_frozen=1; }
    sleep 1
  done
  for _ in 1 2 3; do answers && return 0; sleep 1; done
  return 1
}

if [ "$down" = 0 ] && [ "$restart" = 0 ] && live; then exit 0; fi

# The lock, unless an ancestor (scripts/dev-it.sh's flock) already holds it.
lock_held_by_ancestor() {
  [ -e "$lock" ] || return 1
  local ino holders p
  ino=$(stat -c %i "$lock")
  holders=$(awk -v ino="$ino" '{ split($6, d, ":"); if (d[3] == ino) print $5 }' /proc/locks)
  [ -n "$holders" ] || return 1
  p=$$
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    for h in $holders; do [ "$h" = "$p" ] && return 0; done
    p=$(ps -o ppid= -p "$p" | tr -d ' ')
  done
  return 1
}
if ! lock_held_by_ancestor; then
  exec 9>>"$lock"
  if ! flock -n 9; then
    log "waiting for $lock (a test run holds the test hosts)"
    flock 9
  fi
  # Someone else may have brought the host up while we waited.
  if [ "$down" = 0 ] && [ "$restart" = 0 ] && live; then exit 0; fi
fi

# Destroys a libvirtd's guests and networks through virsh $@ (so that their dnsmasq and
# bridges go with them), then stops it. $1: "all" to undefine the test networks and guests
# too (a libvirtd that shared the machine's /etc/libvirt: what it defined would stay there).
virsh_cleanup() {
  local undefine=$1 name; shift
  for name in $("$@" virsh -c "$uri" list --name 2>/dev/null); do "$@" virsh -c "$uri" destroy "$name" >/dev/null 2>&1 || true; done
  for name in $("$@" virsh -c "$uri" net-list --name 2>/dev/null); do "$@" virsh -c "$uri" net-destroy "$name" >/dev/null 2>&1 || true; done
  [ "$undefine" = all ] || return 0
  for name in $("$@" virsh -c "$uri" list --all --name 2>/dev/null); do
    [[ "$name" =~ ^ins-[a-z0-9]{8}$ ]] && "$@" virsh -c "$uri" undefine --nvram "$name" >/dev/null 2>&1 || true
  done
  for name in $("$@" virsh -c "$uri" net-list --all --name 2>/dev/null); do
    [[ "$name" = cdhtest* ]] && "$@" virsh -c "$uri" net-undefine "$name" >/dev/null 2>&1 || true
  done
}

# Everything of the namespaces NET_INODE left running: daemons, dnsmasq, guests.
kill_net() {
  local net=$1 p
  [ -n "$net" ] || return 0
  for p in $(procs_in_net libvirtd "$net") $(procs_in_net virtlogd "$net") $(procs_in_net dnsmasq "$net"); do stop_pid "$p"; done
  for p in $(pgrep -f '^/usr/bin/qemu-system-' || true); do [ "$(ns_inode "$p" net)" = "$net" ] && stop_pid "$p"; done
  return 0
}

# A libvirtd of the older set-up (`ip netns exec NAME libvirtd`): in the host's network
# namespace but sharing the machine's /etc/libvirt and /run/libvirt.
if have_netns; then
  net=$(host_net) mnt=$(host_mnt)
  for p in $(procs_in_net libvirtd "$net"); do
    [ -n "$mnt" ] && [ "$(ns_inode "$p" mnt)" = "$mnt" ] && continue
    log "stopping the libvirtd ($p) an older set-up started in network namespace $host (it shares /etc/libvirt with the machine)"
    if nsenter -t "$p" -m -n -- timeout 20 virsh -c "$uri" version >/dev/null 2>&1; then
      virsh_cleanup all nsenter -t "$p" -m -n --
    fi
    stop_pid "$p"
    for f in /run/libvirtd.pid /run/virtlogd.pid; do
      [ -f "$f" ] && ! kill -0 "$(cat "$f" 2>/dev/null || echo 0)" 2>/dev/null && rm -f "$f"
    done
    for q in $(procs_in_net virtlogd "$net"); do [ "$(ns_inode "$q" mnt)" = "$mnt" ] || stop_pid "$q"; done
  done
fi

if [ "$down" = 1 ] || { [ "$restart" = 1 ] && [ -n "$(host_libvirtd)" ]; }; then
  pid=$(host_libvirtd | head -n1)
  if [ "$down" = 1 ]; then
    if [ -n "$pid" ] && answers; then virsh_cleanup some in_host; fi
    kill_net "$(host_net)"
    if have_mntns; then umount "$mnt_file"; fi
    if have_netns; then ip netns delete "$host"; fi
    rm -f "$mnt_file" "$ids_file"
    log "$host is down"
    exit 0
  fi
  stop_pid "$pid"
fi

# --- namespaces -------------------------------------------------------------------------
fresh=0
if ! have_netns || ! have_mntns; then
  # Whatever an earlier incarnation of this host left running (its namespaces are gone or
  # half gone): dnsmasq with bind-dynamic would grab the new bridges' addresses.
  if [ -f "$ids_file" ]; then read -r old_net _ <"$ids_file" || true; kill_net "${old_net:-}"; fi
  kill_net "$(host_net)"
  if have_mntns; then umount "$mnt_file"; fi
  if have_netns; then ip netns delete "$host"; fi
  fresh=1
fi

if [ "$fresh" = 1 ]; then
  ip netns add "$host"
  ip netns exec "$host" ip link set lo up
  mkdir -p "$hosts_run"
  # A namespace file can only be bind-mounted on a private mount.
  if ! mountpoint -q "$hosts_run"; then mount --bind "$hosts_run" "$hosts_run"; fi
  mount --make-private "$hosts_run"

  # Private state: /run/libvirt starts empty (no network or guest believed active);
  # /etc/libvirt is seeded once from the packages' files (the nwfilter definitions from
  # /usr/share/libvirt), without libvirt's `default` network.
  rm -rf "$run_dir"
  mkdir -p "$run_dir" "$state"/{lib,cache,log}
  chmod 755 "$run_dir" "$state"
  if [ ! -f "$state/etc/libvirtd.conf" ]; then
    rm -rf "$state/etc.new"
    mkdir -p "$state/etc.new"/{hooks,nwfilter,secrets,qemu/networks/autostart,storage}
    for pkg in libvirt-daemon-system libvirt-clients libvirt-daemon-config-network libvirt-daemon-config-nwfilter; do
      dpkg -L "$pkg" 2>/dev/null || true
    done | grep '^/etc/libvirt/' | while read -r f; do
      [ -f "$f" ] || continue
      mkdir -p "$state/etc.new/$(dirname "${f#/etc/libvirt/}")"
      cp -p "$f" "$state/etc.new/${f#/etc/libvirt/}"
    done
    cp -p /usr/share/libvirt/nwfilter/*.xml "$state/etc.new/nwfilter/" 2>/dev/null || true
    rm -rf "$state/etc"
    mv "$state/etc.new" "$state/etc"
  fi
  # The layout (owners, modes) of the machine's directories, without their contents.
  for d in lib cache log; do
    src=/var/$d/libvirt
    [ -d "$src" ] || continue
    chown --reference="$src" "$state/$d"; chmod --reference="$src" "$state/$d"
    (cd "$src" && find . -mindepth 1 -maxdepth 2 -type d -printf '%P\n') | while read -r sub; do
      [ -d "$state/$d/$sub" ] && continue
      mkdir -p "$state/$d/$sub"
      chown --reference="$src/$sub" "$state/$d/$sub"; chmod --reference="$src/$sub" "$state/$d/$sub"
    done
  done
  # Inside the host's network namespace: a new mount namespace (mounts of the machine still
  # propagate in, none propagates out), a sysfs of that network namespace (as `ip netns exec`
  # mounts one), and the private directories.
  touch "$mnt_file"
  nsenter --net="$netns_file" -- unshare --mount="$mnt_file" --propagation slave -- bash -euc '
    umount -l /sys
    mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    mount --bind "$1" /run/libvirt
    mount --bind "$2/etc" /etc/libvirt
    mount --bind "$2/lib" /var/lib/libvirt
    mount --bind "$2/cache" /var/cache/libvirt
    mount --bind "$2/log" /var/log/libvirt
  ' mounts "$run_dir" "$state"
  echo "$(host_net) $(host_mnt)" >"$ids_file"
  log "made test host $host (network namespace $netns_file, mount namespace $mnt_file, state in $state)"
fi

# --- daemons ----------------------------------------------------------------------------
net=$(host_net)
for p in $(procs_in_net virtlogd "$net"); do
  [ "$(ns_inode "$p" mnt)" = "$(host_mnt)" ] && vl=$p
done
if [ -z "${vl:-}" ]; then
  rm -f "$run_dir/virtlogd.pid"
  daemon nsenter --net="$netns_file" --mount="$mnt_file" -- virtlogd -d -p /run/libvirt/virtlogd.pid
fi
if [ -z "$(host_libvirtd)" ]; then
  rm -f "$run_dir/libvirtd.pid"
  # scripts/two-hosts.sh's TCP listener for peer-to-peer migration: only while its link address exists.
  listen=()
  lconf=$state/etc/libvirtd-two-hosts.conf
  if [ -f "$lconf" ]; then
    laddr=$(sed -n 's/^listen_addr *= *"\([0-9.]*\)"/\1/p' "$lconf")
    if [ -n "$laddr" ] && in_host ip -o -4 addr show | grep -q " inet $laddr/"; then listen=(--listen -f /etc/libvirt/libvirtd-two-hosts.conf); fi
  fi
  daemon nsenter --net="$netns_file" --mount="$mnt_file" -- libvirtd -d -p /run/libvirt/libvirtd.pid "${listen[@]}"
fi
for _ in $(seq 300); do
  if in_host virsh -c "$uri" version >/dev/null 2>&1; then
    # Never libvirt's `default` network in a test host.
    in_host virsh -c "$uri" net-autostart --disable default >/dev/null 2>&1 || true
    exit 0
  fi
  sleep 0.2
done
log "$host's libvirtd did not answer on $uri"
exit 1
