#!/usr/bin/env bash
# Two test hosts on this machine for the migration tests (and by hand): cdhtest and cdhtest2,
# each its own network + mount namespace with its own libvirtd, /run/libvirt, /var/lib/libvirt
# (scripts/libvirtd-up.sh --host NAME), joined by two veth pairs:
#   - the migration link: cdhmiga (10.250.0.1/24, in the first host) <-> cdhmigb (10.250.0.2/24,
#     in the second). The agents' APIs (TLS) and each libvirtd's TCP listener (qemu+tcp, port
#     16509, auth none: no secret anywhere; it listens on the link address only, and an nftables
#     table of this script drops 16509 and the migration and NBD ports 49152-49279 from anything but the
#     link) are reached over it. Nothing leaves the two namespaces.
#   - the subnet link: cdhlnka <-> cdhlnkb, a port of each host's subnet bridge (default
#     cdhtbr0, the test agents' bridge: it exists once an agent made its network), so a guest
#     keeps its address on either host. Each host keeps its own gateway 10.201.0.1: ARP and IP
#     for the gateway address and DHCP do not cross the link (a bridge-family nftables table).
#
#   two-hosts.sh up      both hosts, the migration link and the libvirtd listeners (a no-op when up)
#   two-hosts.sh link    the subnet link (after the agents made their bridges); a no-op when linked
#   two-hosts.sh down    the links, the listeners' configuration, and the second host
#   two-hosts.sh cut     the migration link down at both ends (a pulled cable: the fault tests)
#   two-hosts.sh mend    the migration link up again
#   two-hosts.sh status  what is up
# From inside a test host (a test's set-up) it acts from the machine's namespaces, through
# CDH_MACHINE_NS_PID (scripts/in-testns.sh). Names: CDH_HOST_A / CDH_HOST_B, CDH_TEST_BRIDGE.
set -euo pipefail
script=$(readlink -f "$0")
here=$(dirname "$script")
A=${CDH_HOST_A:-cdhtest} B=${CDH_HOST_B:-cdhtest2}
ADDR_A=10.250.0.1 ADDR_B=10.250.0.2
BRIDGE=${CDH_TEST_BRIDGE:-cdhtbr0}
GATEWAY=${CDH_TEST_GATEWAY:-10.201.0.1}
cmd=${1:-}
log() { echo "two-hosts: $*" >&2; }

# Inside a test host: act from the machine's namespaces.
inside_test_host() {
  local self f
  self=$(readlink /proc/self/ns/net | tr -dc 0-9)
  for f in /run/netns/*; do [ -e "$f" ] && [ "$(stat -L -c %i "$f")" = "$self" ] && return 0; done
  return 1
}
if inside_test_host; then
  m=${CDH_MACHINE_NS_PID:-}
  if [ -n "$m" ] && [ -r "/proc/$m/ns/net" ] && [ "$(readlink "/proc/$m/ns/net")" != "$(readlink /proc/self/ns/net)" ]; then
    exec nsenter -t "$m" -m -n -- bash "$script" "$@"
  fi
  log "run this from the machine's namespaces, or through scripts/in-testns.sh (CDH_MACHINE_NS_PID)"
  exit 1
fi

in_ns() { local h=$1; shift; nsenter --net="/run/netns/$h" --mount="/run/cdh-hosts/$h.mnt" -- "$@"; }
state_of() { echo "/var/lib/cdh-hosts/$1"; }

# libvirtd's TCP listener: a copy of the host's libvirtd.conf with the listener's lines; libvirtd-up.sh
# starts libvirtd with it (and --listen) while the link address exists.
listen_conf() { # HOST ADDR
  local etc
  etc=$(state_of "$1")/etc
  {
    grep -v -E '^(listen_tls|listen_tcp|listen_addr|auth_tcp) *=' "$etc/libvirtd.conf" || true
    printf 'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "%s"\nauth_tcp = "none"\n' "$2"
  } >"$etc/libvirtd-two-hosts.conf.new"
  mv "$etc/libvirtd-two-hosts.conf.new" "$etc/libvirtd-two-hosts.conf"
}
listening() { in_ns "$1" ss -ltnH | grep -q " $2:16509 "; }

guard() { # HOST LINK-IFACE: only the link reaches libvirtd's TCP port and the migration ports
  in_ns "$1" nft -f - <<EOF
table inet cdh_two_hosts
delete table inet cdh_two_hosts
table inet cdh_two_hosts {
  chain input {
    type filter hook input priority -5; policy accept;
    iifname { "lo", "$2" } accept
    tcp dport { 16509, 49152-49279 } drop
  }
}
EOF
}

up() {
  bash "$here/libvirtd-up.sh" --host "$A"
  bash "$here/libvirtd-up.sh" --host "$B"
  if ! ip -n "$A" link show cdhmiga >/dev/null 2>&1; then
    ip -n "$B" link del cdhmigb 2>/dev/null || true
    ip link add cdhmiga netns "$A" type veth peer name cdhmigb netns "$B"
    ip -n "$A" addr add "$ADDR_A/24" dev cdhmiga
    ip -n "$B" addr add "$ADDR_B/24" dev cdhmigb
    ip -n "$A" link set cdhmiga up
    ip -n "$B" link set cdhmigb up
    log "migration link cdhmiga ($ADDR_A, $A) <-> cdhmigb ($ADDR_B, $B)"
  fi
  # Up also after a cut an interrupted fault test left.
  ip -n "$A" link set cdhmiga up
  ip -n "$B" link set cdhmigb up
  guard "$A" cdhmiga
  guard "$B" cdhmigb
  listen_conf "$A" "$ADDR_A"
  listen_conf "$B" "$ADDR_B"
  listening "$A" "$ADDR_A" || bash "$here/libvirtd-up.sh" --host "$A" --restart
  listening "$B" "$ADDR_B" || bash "$here/libvirtd-up.sh" --host "$B" --restart
  for _ in $(seq 50); do listening "$A" "$ADDR_A" && listening "$B" "$ADDR_B" && break; sleep 0.2; done
  listening "$A" "$ADDR_A" && listening "$B" "$ADDR_B" || { log "a libvirtd does not listen on its link address"; exit 1; }
  in_ns "$A" timeout 20 virsh -c "qemu+tcp://$ADDR_B/system" uri >/dev/null
  in_ns "$B" timeout 20 virsh -c "qemu+tcp://$ADDR_A/system" uri >/dev/null
  log "up: $A ($ADDR_A) and $B ($ADDR_B); each libvirtd answers the other on qemu+tcp://ADDR/system"
}

bridge_filter() { # HOST PORT
  in_ns "$1" nft -f - <<EOF
table bridge cdh_two_hosts
delete table bridge cdh_two_hosts
table bridge cdh_two_hosts {
  chain forward {
    type filter hook forward priority -5; policy accept;
    iifname "$2" arp saddr ip $GATEWAY drop
    oifname "$2" arp saddr ip $GATEWAY drop
    iifname "$2" arp daddr ip $GATEWAY drop
    oifname "$2" arp daddr ip $GATEWAY drop
    iifname "$2" ip saddr $GATEWAY drop
    oifname "$2" ip saddr $GATEWAY drop
    oifname "$2" ip daddr $GATEWAY drop
    iifname "$2" ip daddr $GATEWAY drop
    iifname "$2" udp dport { 67, 68 } drop
    oifname "$2" udp dport { 67, 68 } drop
  }
  chain output {
    type filter hook output priority -5; policy accept;
    oifname "$2" arp saddr ip $GATEWAY drop
    oifname "$2" ip saddr $GATEWAY drop
    oifname "$2" udp dport { 67, 68 } drop
  }
  chain input {
    type filter hook input priority -5; policy accept;
    iifname "$2" arp daddr ip $GATEWAY drop
    iifname "$2" ip daddr $GATEWAY drop
    iifname "$2" udp dport { 67, 68 } drop
  }
}
EOF
}

link() {
  for h in "$A" "$B"; do
    ip -n "$h" link show "$BRIDGE" >/dev/null 2>&1 || { log "$h has no bridge $BRIDGE yet (an agent makes it)"; exit 1; }
  done
  if ! ip -n "$A" link show cdhlnka >/dev/null 2>&1; then
    ip -n "$B" link del cdhlnkb 2>/dev/null || true
    ip link add cdhlnka netns "$A" type veth peer name cdhlnkb netns "$B"
  fi
  bridge_filter "$A" cdhlnka
  bridge_filter "$B" cdhlnkb
  ip -n "$A" link set cdhlnka master "$BRIDGE" up
  ip -n "$B" link set cdhlnkb master "$BRIDGE" up
  log "subnet link: $A/$BRIDGE <-> $B/$BRIDGE"
}

down() {
  for h in "$A" "$B"; do
    [ -e "/run/netns/$h" ] || continue
    ip -n "$h" link del cdhmiga 2>/dev/null || true
    ip -n "$h" link del cdhlnka 2>/dev/null || true
    in_ns "$h" nft delete table inet cdh_two_hosts 2>/dev/null || true
    in_ns "$h" nft delete table bridge cdh_two_hosts 2>/dev/null || true
  done
  rm -f "$(state_of "$A")/etc/libvirtd-two-hosts.conf" "$(state_of "$B")/etc/libvirtd-two-hosts.conf"
  bash "$here/libvirtd-up.sh" --host "$B" --down
  log "down: the links are gone, $B is down; $A's libvirtd listens on nothing once restarted"
}

cut() {
  ip -n "$A" link set cdhmiga down
  ip -n "$B" link set cdhmigb down
  log "migration link cut (cdhmiga, cdhmigb down)"
}

mend() {
  ip -n "$A" link set cdhmiga up
  ip -n "$B" link set cdhmigb up
  log "migration link mended"
}

status() {
  for h in "$A" "$B"; do
    if [ -e "/run/netns/$h" ]; then
      echo "$h: $(in_ns "$h" ip -o -4 addr show | awk '{print $2, $4}' | tr '\n' ' ')"
    else
      echo "$h: down"
    fi
  done
}

case "$cmd" in
  up) up ;;
  link) link ;;
  down) down ;;
  cut) cut ;;
  mend) mend ;;
  status) status ;;
  *) sed -n '2,23p' "$script"; exit 2 ;;
esac
