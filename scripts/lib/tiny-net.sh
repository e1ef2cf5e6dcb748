#!/bin/sh
# shellcheck shell=sh
# cdh-net: the tiny guest's network side (busybox sh; scripts/build-tiny-image.sh installs
# it as /bin/cdh-net). Every line it prints goes to the serial console, /dev/ttyS0.
#
#   cdh-net setup
#       At boot, once the CD-ROM modules are in: mounts the config drive (ISO 9660 with
#       openstack/latest/network_data.json), gives every NIC named there its address,
#       prefix and default route (busybox ip), starts the responders and prints
#         CDH-TINY-NET id=INSTANCE nics=eth0:MAC:IP/PREFIX,... gw=GATEWAY
#       (or `CDH-TINY-NET none` when no drive shows up within 60 s), then
#         CDH-TINY-NICS gen=G nics=eth0:MAC:IP/P+IP/P,eth1:MAC:IP/P,...
#       (every NIC but lo, each with all its IPv4 addresses, the primary first; G the
#       drive's meta.generation). It then follows the drive (re-read every second: the
#       agent hot-swaps it on every change) and the NIC set (hot-plug, unplug): on a change
#       it applies network_data.json again (new NICs up, addresses added and removed, a
#       source rule per address to its NIC's table) and prints a new CDH-TINY-NICS line.
#       Responders: TCP 7001 and 7002 answer one line `CDH-TCP port=P id=INSTANCE`,
#       UDP 7003 answers `CDH-UDP port=7003 id=INSTANCE`, TCP 7004 reads everything and
#       answers the byte count (a sink for throughput), ICMP echo is the kernel's.
#   cdh-net probe ID PROTO IP PORT SECS [SRC]
#       PROTO tcp|udp|icmp (PORT is ignored for icmp); SRC a local source address to
#       send from. Prints `CDH-NET ID ok REPLY` (REPLY: the first line the other end sent,
#       so a TCP server that says nothing first counts as not reached) or
#       `CDH-NET ID fail why=refused|timeout ms=N` (refused: it ended before the bound),
#       within SECS (+1 for udp).
#   cdh-net watch ID PROTO IP PORT SECS
#       Probes again and again (results `CDH-NET ID.N ok|fail ...`) until `cdh-net stop ID`.
#   cdh-net stop ID
#   cdh-net nics ID                             (`CDH-NET ID ok CDH-TINY-NICS gen=G nics=...` now)
#   cdh-net get ID PATH                         (GET http://169.254.169.254/PATH: `CDH-NET ID ok BODY`, lines joined by |)
#   cdh-net addr ID add|del ADDR/PREFIX         (on eth0; forging a source address)
#   cdh-net mac ID MAC                          (eth0's MAC; forging a source MAC)
#   cdh-net send ID IP PORT MB SECS
#       Sends MB MiB of zeros to a sink (TCP 7004) and prints
#       `CDH-NET ID ok bytes=N t0=UPTIME t1=UPTIME` (uptimes in seconds, 10 ms steps) or fail.
# The serial command reader in the init runs every line `cdh-net ...` in the background.
con=/dev/ttyS0
say() { echo "$*" >"$con"; }
field() { echo "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }

# The config drive's device (found at setup): sr0, or sr1 when an ISO sits in the first.
drive_file=/tmp/cdh-drive

# Copies the config drive's network_data.json and meta_data.json to /tmp/cdh-new.*; fails
# when the drive cannot be read now (no media, a swap under way).
read_drive() {
  d=$(cat "$drive_file" 2>/dev/null)
  [ -n "$d" ] || return 1
  mkdir -p /mnt/config
  mount -t iso9660 -o ro "$d" /mnt/config 2>/dev/null || return 1
  ok=1
  cp /mnt/config/openstack/latest/network_data.json /tmp/cdh-new.net 2>/dev/null || ok=
  cp /mnt/config/openstack/latest/meta_data.json /tmp/cdh-new.meta 2>/dev/null || : >/tmp/cdh-new.meta
  umount /mnt/config
  [ -n "$ok" ]
}

# Brings the NICs to what /etc/network_data.json says: every link present (found by MAC) is up
# with every address of its networks (a network per address: the primary first, then the
# secondary ones) and the default route of the network that has one; an address that this
# function added before and the file no longer names is removed (an address added by
# `cdh-net addr` is never touched). Each NIC's addresses get a source rule to a table of the
# NIC's own (100 + N for ethN), so a reply from an address leaves through the NIC that owns
# it, as anti-spoofing wants when two NICs share a subnet.
apply() {
  { sed 's/{"id":/\n{"id":/g' /etc/network_data.json; echo; } >/tmp/net.lines
  : >/tmp/cdh-want
  : >/tmp/cdh-named
  while IFS= read -r obj; do
    case "$obj" in *'"type":"ipv4"'*) ;; *) continue ;; esac
    link=$(field "$obj" link)
    ip=$(field "$obj" ip_address)
    mask=$(field "$obj" netmask)
    # Every address the file names, on a NIC present or not: one whose MAC was changed in the
    # guest (`cdh-net mac`) keeps its address; only what the file stops naming is removed.
    [ -n "$ip" ] && echo "$ip" >>/tmp/cdh-named
    mac=$(grep "\"id\":\"$link\"" /tmp/net.lines | grep -o '"ethernet_mac_address":"[^"]*"' | head -n1 | cut -d'"' -f4 | tr A-F a-f)
    ifc=
    for f in /sys/class/net/*/address; do
      [ "$(tr A-F a-f <"$f")" = "$mac" ] && ifc=$(basename "$(dirname "$f")")
    done
    [ -n "$ifc" ] && [ -n "$ip" ] || continue
    prefix=$(ipcalc -p "$ip" "$mask" | cut -d= -f2)
    net=$(ipcalc -n "$ip" "$mask" | cut -d= -f2)
    table=$((100 + ${ifc#eth}))
    ip link set dev "$ifc" up
    echo "$ifc $ip/$prefix $table" >>/tmp/cdh-want
    if ! ip -4 addr show dev "$ifc" | grep -q "inet $ip/$prefix "; then
      ip addr add "$ip/$prefix" dev "$ifc"
      (arping -U -c 1 -I "$ifc" -s "$ip" "$ip" >/dev/null 2>&1 &)
    fi
    ip route replace "$net/$prefix" dev "$ifc" table "$table" 2>/dev/null
    ip rule show | grep -q "from $ip lookup $table" || ip rule add from "$ip" table "$table" pref 1000 2>/dev/null
    route=$(echo "$obj" | grep -o '{"network":"0.0.0.0","netmask":"0.0.0.0","gateway":"[0-9.]*"' | head -n1)
    if [ -n "$route" ]; then
      gw=$(field "$route" gateway)
      echo "$gw" >/tmp/cdh-gw
      ip route replace default via "$gw" dev "$ifc"
    fi
  done </tmp/net.lines
  if [ -f /tmp/cdh-have ]; then
    while read -r ifc cidr table; do
      grep -q "^$ifc $cidr " /tmp/cdh-want && continue
      # Named by the file but on no NIC present (its MAC changed in the guest): kept. Named on
      # another NIC present (the address moved): removed here, since that NIC has it now.
      if grep -qx "${cidr%/*}" /tmp/cdh-named && ! grep -q " $cidr " /tmp/cdh-want; then
        echo "$ifc $cidr $table" >>/tmp/cdh-want
        continue
      fi
      ip addr del "$cidr" dev "$ifc" 2>/dev/null
      ip rule del from "${cidr%/*}" table "$table" 2>/dev/null
    done </tmp/cdh-have
  fi
  mv /tmp/cdh-want /tmp/cdh-have
}

# `eth0:MAC:IP/P+IP/P,eth1:MAC:IP/P`: every NIC (not lo) with its IPv4 addresses, primary first.
nics_now() {
  out=
  for d in /sys/class/net/*; do
    ifc=$(basename "$d")
    [ "$ifc" = lo ] && continue
    mac=$(tr A-F a-f <"$d/address")
    addrs=$(ip -4 addr show dev "$ifc" | grep -o 'inet [0-9./]*' | cut -d' ' -f2 | tr '\n' '+')
    out="${out:+$out,}$ifc:$mac:${addrs%+}"
  done
  echo "$out"
}

generation() { field "$(cat /etc/meta_data.json 2>/dev/null)" generation; }

# Follows the config drive (read every second) and the NIC set: on a change, applies the new
# network_data.json and prints `CDH-TINY-NICS gen=G nics=...` (the drive's generation).
follow() {
  last_macs=$(cat /sys/class/net/*/address | sort | tr '\n' ' ')
  while :; do
    sleep 1
    changed=
    macs=$(cat /sys/class/net/*/address | sort | tr '\n' ' ')
    [ "$macs" = "$last_macs" ] || { changed=1; last_macs=$macs; }
    if read_drive && ! cmp -s /tmp/cdh-new.net /etc/network_data.json; then
      cp /tmp/cdh-new.net /etc/network_data.json
      cp /tmp/cdh-new.meta /etc/meta_data.json
      changed=1
    fi
    [ -n "$changed" ] || continue
    apply
    say "CDH-TINY-NICS gen=$(generation) nics=$(nics_now)"
  done
}

setup() {
  # The drive's door is never locked while it is read: the agent swaps it at any moment
  # (a locked tray makes libvirt's change-media time out waiting to open it).
  echo 0 >/proc/sys/dev/cdrom/lock 2>/dev/null
  found=
  i=0
  while [ $i -lt 120 ] && [ -z "$found" ]; do
    for d in /dev/sr0 /dev/sr1; do
      [ -b "$d" ] || continue
      echo "$d" >"$drive_file"
      if read_drive; then found=$d; break; fi
    done
    [ -n "$found" ] || usleep 500000
    i=$((i + 1))
  done
  if [ -z "$found" ]; then rm -f "$drive_file"; say "CDH-TINY-NET none"; return 0; fi
  cp /tmp/cdh-new.net /etc/network_data.json
  cp /tmp/cdh-new.meta /etc/meta_data.json
  id=$(field "$(cat /etc/meta_data.json 2>/dev/null)" instance_id)
  [ -n "$id" ] || id=unknown
  # A NIC answers ARP only for its own addresses, from its own addresses.
  echo 1 >/proc/sys/net/ipv4/conf/all/arp_ignore
  echo 2 >/proc/sys/net/ipv4/conf/all/arp_announce
  apply
  # CDH-TINY-NET names each NIC configured, with its first (primary) address.
  nics=
  while read -r ifc cidr table; do
    case ",$nics" in *",$ifc:"*) continue ;; esac
    mac=$(tr A-F a-f <"/sys/class/net/$ifc/address")
    nics="${nics:+$nics,}$ifc:$mac:$cidr"
  done </tmp/cdh-have
  gw=$(cat /tmp/cdh-gw 2>/dev/null)

  for port in 7001 7002; do
    printf '#!/bin/sh\necho "CDH-TCP port=%s id=%s"\n' "$port" "$id" >"/bin/cdh-tcp-$port"
    chmod 755 "/bin/cdh-tcp-$port"
    nc -ll -p "$port" -e "/bin/cdh-tcp-$port" </dev/null >/dev/null 2>&1 &
  done
  printf '#!/bin/sh\necho "CDH-UDP port=7003 id=%s"\n' "$id" >/bin/cdh-udp-7003
  printf '#!/bin/sh\nwc -c\n' >/bin/cdh-sink
  chmod 755 /bin/cdh-udp-7003 /bin/cdh-sink
  nc -ll -p 7004 -e /bin/cdh-sink </dev/null >/dev/null 2>&1 &
  # nc.traditional answers one datagram and exits: listen again at once.
  (while :; do
     nc.traditional -n -u -l -p 7003 -e /bin/cdh-udp-7003 </dev/null >/dev/null 2>&1 || sleep 1
   done) &
  i=0
  while [ $i -lt 50 ]; do
    n=$(netstat -ltun 2>/dev/null | grep -c -E ':700[1-4] ')
    [ "$n" -ge 4 ] && break
    usleep 100000; i=$((i + 1))
  done
  say "CDH-TINY-NET id=$id nics=$nics gw=$gw"
  say "CDH-TINY-NICS gen=$(generation) nics=$(nics_now)"
  follow </dev/null >/dev/null 2>&1 &
}


probe() {
  pid=$1 proto=$2 ip=$3 port=$4 secs=${5:-1} src=${6:-}
  out=
  t0=$(cut -d' ' -f1 /proc/uptime | tr -d .)
  case "$proto" in
    tcp)
      if [ -n "$src" ]; then
        out=$(timeout "$secs" nc.traditional -n -w "$secs" -s "$src" "$ip" "$port" </dev/null 2>/dev/null | head -n1)
      else
        out=$(timeout "$secs" nc "$ip" "$port" </dev/null 2>/dev/null | head -n1)
      fi ;;
    udp)
      out=$(echo probe | timeout $((secs + 1)) nc.traditional -n -u -w "$secs" ${src:+-s "$src"} "$ip" "$port" 2>/dev/null | head -n1) ;;
    icmp)
      ping -c 1 -W "$secs" ${src:+-I "$src"} "$ip" >/dev/null 2>&1 && out="CDH-ICMP from=$ip" ;;
    *) say "CDH-NET $pid fail unknown-protocol"; return 0 ;;
  esac
  out=$(echo "$out" | tr -d '\r')
  # Reached = the other end answered a line (our responders, an SSH banner, ...). A failure
  # says whether it came before the bound (refused: a RST or an ICMP error) or at it (timeout).
  t1=$(cut -d' ' -f1 /proc/uptime | tr -d .)
  if [ -n "$out" ]; then say "CDH-NET $pid ok $out"
  elif [ $((t1 - t0)) -lt $((secs * 100 - 30)) ]; then say "CDH-NET $pid fail why=refused ms=$(((t1 - t0) * 10))"
  else say "CDH-NET $pid fail why=timeout ms=$(((t1 - t0) * 10))"; fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  probe) probe "$@" ;;
  watch)
    wid=$1; shift
    echo $$ >"/tmp/cdh-watch-$wid"
    n=0
    while [ -f "/tmp/cdh-watch-$wid" ]; do
      n=$((n + 1))
      probe "$wid.$n" "$@"
      usleep 200000
    done ;;
  nics) say "CDH-NET $1 ok CDH-TINY-NICS gen=$(generation) nics=$(nics_now)" ;;
  get)
    # One metadata path, lines joined with `|` (the answer must fit one console line).
    if body=$(wget -q -T 5 -O - "http://169.254.169.254/$2" 2>/dev/null); then say "CDH-NET $1 ok $(printf '%s' "$body" | tr '\n' '|')"; else say "CDH-NET $1 fail"; fi ;;
  stop)
    rm -f "/tmp/cdh-watch-$1"
    say "CDH-NET $1 ok stopped" ;;
  addr)
    if ip addr "$2" "$3" dev eth0 2>/dev/null; then say "CDH-NET $1 ok CDH-ADDR $2 $3"; else say "CDH-NET $1 fail"; fi ;;
  mac)
    if ip link set dev eth0 address "$2" 2>/dev/null; then say "CDH-NET $1 ok CDH-MAC $2"; else say "CDH-NET $1 fail"; fi ;;
  send)
    sid=$1 ip=$2 port=$3 mb=$4 secs=$5
    t0=$(cut -d' ' -f1 /proc/uptime)
    bytes=$(dd if=/dev/zero bs=65536 count=$((mb * 16)) 2>/dev/null | timeout "$secs" nc "$ip" "$port" 2>/dev/null | head -n1 | tr -d ' \r')
    t1=$(cut -d' ' -f1 /proc/uptime)
    if [ "$bytes" = $((mb * 1048576)) ]; then say "CDH-NET $sid ok CDH-SENT bytes=$bytes t0=$t0 t1=$t1"; else say "CDH-NET $sid fail bytes=$bytes"; fi ;;
  *) say "CDH-NET ${1:-?} fail unknown-command" ;;
esac
