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
#       (or `CDH-TINY-NET none` when no drive shows up within 60 s).
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
#   cdh-net addr ID add|del ADDR/PREFIX         (on eth0; forging a source address)
#   cdh-net mac ID MAC                          (eth0's MAC; forging a source MAC)
#   cdh-net send ID IP PORT MB SECS
#       Sends MB MiB of zeros to a sink (TCP 7004) and prints
#       `CDH-NET ID ok bytes=N t0=UPTIME t1=UPTIME` (uptimes in seconds, 10 ms steps) or fail.
# The serial command reader in the init runs every line `cdh-net ...` in the background.
con=/dev/ttyS0
say() { echo "$*" >"$con"; }
field() { echo "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }

setup() {
  mkdir -p /mnt/config
  found=
  i=0
  while [ $i -lt 120 ] && [ -z "$found" ]; do
    for d in /dev/sr0 /dev/sr1; do
      [ -b "$d" ] || continue
      mount -t iso9660 -o ro "$d" /mnt/config 2>/dev/null || continue
      if [ -f /mnt/config/openstack/latest/network_data.json ]; then found=$d; break; fi
      umount /mnt/config
    done
    [ -n "$found" ] || usleep 500000
    i=$((i + 1))
  done
  if [ -z "$found" ]; then say "CDH-TINY-NET none"; return 0; fi
  cp /mnt/config/openstack/latest/network_data.json /etc/network_data.json
  cp /mnt/config/openstack/latest/meta_data.json /etc/meta_data.json 2>/dev/null
  umount /mnt/config
  id=$(field "$(cat /etc/meta_data.json 2>/dev/null)" instance_id)
  [ -n "$id" ] || id=unknown

  # One object a line: links ({"id":"eth0",...,"ethernet_mac_address":...}), then networks.
  # (the file has no final newline: `read` would drop its last line)
  { sed 's/{"id":/\n{"id":/g' /etc/network_data.json; echo; } >/tmp/net.lines
  nics= gw=
  while IFS= read -r obj; do
    case "$obj" in *'"type":"ipv4"'*) ;; *) continue ;; esac
    link=$(field "$obj" link)
    ip=$(field "$obj" ip_address)
    mask=$(field "$obj" netmask)
    mac=$(grep "\"id\":\"$link\"" /tmp/net.lines | grep -o '"ethernet_mac_address":"[^"]*"' | head -n1 | cut -d'"' -f4 | tr A-F a-f)
    ifc=
    for f in /sys/class/net/*/address; do
      [ "$(tr A-F a-f <"$f")" = "$mac" ] && ifc=$(basename "$(dirname "$f")")
    done
    [ -n "$ifc" ] && [ -n "$ip" ] || continue
    prefix=$(ipcalc -p "$ip" "$mask" | cut -d= -f2)
    ip link set dev "$ifc" up
    ip addr add "$ip/$prefix" dev "$ifc"
    route=$(echo "$obj" | grep -o '{"network":"0.0.0.0","netmask":"0.0.0.0","gateway":"[0-9.]*"' | head -n1)
    if [ -n "$route" ] && [ -z "$gw" ]; then
      gw=$(field "$route" gateway)
      ip route add default via "$gw" dev "$ifc"
    fi
    nics="${nics:+$nics,}$ifc:$mac:$ip/$prefix"
  done </tmp/net.lines

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
