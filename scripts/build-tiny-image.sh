#!/usr/bin/env bash
# Builds the tiny guest images that cdh-agent's integration tests and benchmarks boot:
# a Debian cloud kernel and a busybox initramfs on a 64 MiB syslinux-bootable raw disk,
# one image per guest behaviour (cdh.mode=normal|noacpi|selfoff).
#
#   build-tiny-image.sh [--out DIR] [--force]
#
# DIR defaults to ${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images. When every output
# exists and manifest.json names the SHA-256 of the sources it was built from (this script
# and the scripts/lib files it uses) as theirs now, the script does nothing: a change to any
# of them rebuilds, a file merely touched (a checkout) does not. On success it prints the
# absolute output directory as its only line on stdout; progress goes to stderr.
#
# Outputs: tiny-{normal,noacpi,selfoff}.raw, tiny-normal.qcow2, tiny-vmlinuz,
# tiny-initrd.gz (for direct kernel boot), manifest.json.
#
# The guest prints, on ttyS0, one line
#   CDH-TINY-READY mode=M vcpus=N memtotal_kb=K uuid=U serial=S disks=vda:SECTORS,...
# right after it one line
#   CDH-TINY-DATA vdb=TEXT ...        (first bytes of every disk but vda)
# and, whenever the disks change (hot-plug, detach, online resize; checked every second),
#   CDH-TINY-DISKS disks=vda:SECTORS:SERIAL,...
#   CDH-TINY-DATA vdb=TEXT ...
# In READY the disk entries are vda:SECTORS:SERIAL too (SERIAL may be empty). SERIAL and
# TEXT are safe words or hex:…, see scripts/lib/guest-disks.sh. CDH-TINY-POWEROFF comes
# right before powering off, CDH-TINY-ACPI-IGNORED when it ignores a power-button press
# (noacpi mode).
#
# Network (scripts/lib/tiny-net.sh, installed as /bin/cdh-net): once the CD-ROM modules are
# in, the guest reads the config drive's openstack/latest/network_data.json, configures its
# NICs and starts its responders (TCP 7001, 7002, UDP 7003, a TCP sink on 7004, ping), then
#   CDH-TINY-NET id=INSTANCE nics=eth0:MAC:IP/PREFIX,... gw=GATEWAY     (or CDH-TINY-NET none)
#   CDH-TINY-NICS gen=G nics=eth0:MAC:IP/P+IP/P,eth1:MAC:IP/P,...
# and follows the drive (hot-swapped by the agent; read every second) and hot-plugged NICs,
# printing a new CDH-TINY-NICS line after each change it applied.
# The serial console reads commands: a line `cdh-net ...` runs /bin/cdh-net in the background
# (probes from inside the guest, test/support/guest-net.ts), a line `cdh-shell` starts an
# interactive shell with echo and the prompt `tiny# ` until `exit` (a human at the agent's
# serial console, test/integration/serial-console.test.ts), any other line runs in sh.
set -euo pipefail

script=$(readlink -f "$0")
lib=$(dirname "$script")/lib
# shellcheck source=lib/initramfs.sh
. "$lib/initramfs.sh"
sources=("$script" "$lib/initramfs.sh" "$lib/guest-disks.sh" "$lib/tiny-net.sh")
out="${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images"
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,25p' "$script"; exit 0 ;;
    *) echo "build-tiny-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "build-tiny-image: $*" >&2; }
modes=(normal noacpi selfoff)
outputs=(tiny-normal.raw tiny-noacpi.raw tiny-selfoff.raw tiny-normal.qcow2 tiny-vmlinuz tiny-initrd.gz manifest.json)

mkdir -p "$out"
out=$(cd "$out" && pwd)
chmod 755 "$out"

sources_sha=$(cat "${sources[@]}" | sha256sum | cut -d' ' -f1)
fresh() {
  [ "$force" = 0 ] || return 1
  local f
  for f in "${outputs[@]}"; do [ -e "$out/$f" ] || return 1; done
  grep -q "\"sourcesSha256\": \"$sources_sha\"" "$out/manifest.json"
}
if fresh; then echo "$out"; exit 0; fi

# One build at a time per output directory; a waiter finds the fresh result.
exec 9>"$out/.build.lock"
flock 9
if fresh; then echo "$out"; exit 0; fi

# --- tools --------------------------------------------------------------------------
ird_need syslinux syslinux
ird_need mcopy mtools
ird_need sfdisk fdisk
ird_need mkfs.vfat dosfstools
ird_need cpio cpio
ird_need xz xz-utils
ird_need gzip gzip
ird_need depmod kmod
ird_need qemu-img qemu-utils
ird_need sha256sum coreutils
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || ird_need_pkgs+=(syslinux-common)
[ -e /usr/lib/EXTLINUX/mbr.bin ] || command -v extlinux >/dev/null 2>&1 || ird_need_pkgs+=(extlinux)
ird_install
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[ -e "$mbr_bin" ] || mbr_bin=/usr/lib/EXTLINUX/mbr.bin

work=$(mktemp -d /tmp/cdh-tiny-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# --- kernel and busybox from Debian's archive -----------------------------------------
ird_kernel_pkg
log "kernel $kver"
# netcat-traditional: busybox's nc has no UDP; nc.traditional listens on and sends UDP and
# binds a chosen source address (the forged-source probes). It needs only libc6.
ird_download "$work/debs" "$kpkg" busybox-static netcat-traditional libc6
ird_unpack_kernel "$work/debs"

# Modules loaded before READY (disk, network, power button) and after it, in the
# background (CD-ROM and SCSI paths for config drives; probing IDE is slow under TCG). The cloud
# kernel has no AHCI driver: a config drive must sit on IDE (machine type pc), not SATA.
# virtio_balloon (late): the guest reports its memory statistics to the host, which the
# agent's monitor reads (MemUsed, MemUsage; agent/monitor).
early_mods=(virtio_pci virtio_blk virtio_net virtio_console button evdev)
late_mods=(virtio_scsi ata_piix sr_mod sd_mod isofs vfat virtio_balloon)

root="$work/initramfs"
ird_busybox_root "$root" "$(echo "$work/debs"/busybox-static_*.deb)"
ird_add_modules "$root" early.list "${early_mods[@]}"
ird_add_modules "$root" late.list "${late_mods[@]}"
log "modules before READY: $(tr '\n' ' ' <"$root/lib/modules/early.list")"
cp "$lib/guest-disks.sh" "$root/lib/cdh-disks.sh"
mkdir -p "$work/stage"
for p in netcat-traditional libc6; do dpkg-deb -x "$(echo "$work/debs/${p}"_*.deb)" "$work/stage"; done
ird_add_elf "$root" "$work/stage" bin/nc.traditional
cp "$lib/tiny-net.sh" "$root/bin/cdh-net"
chmod 755 "$root/bin/cdh-net"

cat >"$root/init" <<'INIT'
#!/bin/sh
# cdh-agent tiny test guest. Behaviour from the kernel command line: cdh.mode=normal|noacpi|selfoff
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
con=/dev/ttyS0
say() { echo "$*" >"$con"; }
echo 1 >/proc/sys/kernel/sysrq

mode=normal
for word in $(cat /proc/cmdline); do
  case "$word" in cdh.mode=*) mode=${word#cdh.mode=} ;; esac
done

while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/early.list

# Power button: normal and selfoff obey it, noacpi only reports that it ignored it.
mkdir -p /etc/acpi/PWRF
if [ "$mode" = noacpi ]; then
  printf '#!/bin/sh\necho CDH-TINY-ACPI-IGNORED >/dev/ttyS0\n' >/etc/acpi/PWRF/00000080
else
  printf '#!/bin/sh\necho CDH-TINY-POWEROFF >/dev/ttyS0\nsync\npoweroff -f\n' >/etc/acpi/PWRF/00000080
fi
chmod 755 /etc/acpi/PWRF/00000080
acpid -f -c /etc/acpi -l /var/log/acpid.log -p /var/run/acpid.pid &
acpid_pid=$!
# READY promises that a power-button press is heard: wait until acpid holds the input devices.
i=0
while [ $i -lt 100 ] && ! ls -l /proc/$acpid_pid/fd 2>/dev/null | grep -q /dev/input/event; do
  usleep 20000; i=$((i + 1))
done

vcpus=$(grep -c '^processor' /proc/cpuinfo)
memtotal=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null | tr -d ' ')
serial=$(cat /sys/class/dmi/id/product_serial 2>/dev/null | tr ' ' '_')
. /lib/cdh-disks.sh
disks=$(cdh_disks)
say "CDH-TINY-READY mode=$mode vcpus=$vcpus memtotal_kb=$memtotal uuid=$uuid serial=$serial disks=$disks"
data=$(cdh_data vda)
say "CDH-TINY-DATA${data:+ $data}"

# Disk watcher: hot-plug, detach and online resize show up as a new DISKS line.
(last=$disks
 while :; do
   sleep 1
   now=$(cdh_disks)
   [ "$now" = "$last" ] && continue
   last=$now
   say "CDH-TINY-DISKS disks=$now"
   data=$(cdh_data vda)
   say "CDH-TINY-DATA${data:+ $data}"
 done) &

# The CD-ROM modules, then the network from the config drive (scripts/lib/tiny-net.sh).
(while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/late.list
 /bin/cdh-net setup) &

if [ "$mode" = selfoff ]; then
  (sleep 15; say CDH-TINY-POWEROFF; sync; poweroff -f) &
fi

# The serial console reads commands, without echo: `cdh-net ...` lines (the tests' probes,
# test/support/guest-net.ts) run in the background; any other line runs in sh (a human
# with `virsh console`).
(stty -F "$con" -echo 2>/dev/null
 set -f
 while :; do
   while IFS= read -r line; do
     case "$line" in
       "cdh-net "*) /bin/cdh-net ${line#cdh-net } </dev/null >/dev/null 2>&1 & ;;
       cdh-shell) stty -F "$con" echo; PS1='tiny# ' sh -i <"$con" >"$con" 2>&1; stty -F "$con" -echo ;;
       "") ;;
       *) sh -c "$line" </dev/null >"$con" 2>&1 ;;
     esac
   done <"$con"
   sleep 1
 done) &

while :; do sleep 3600 & wait; done
INIT
chmod 755 "$root/init"

initrd="$work/initrd.gz"
ird_pack "$root" "$initrd"

# --- bootable raw disks ------------------------------------------------------------
size_mib=64
part_start=2048                                        # sectors (1 MiB)
part_kib=$(( (size_mib * 1024 * 1024 / 512 - part_start) / 2 ))
for mode in "${modes[@]}"; do
  img="$work/tiny-$mode.raw"
  truncate -s "${size_mib}M" "$img"
  printf 'label: dos\nstart=%d, type=c, bootable\n' "$part_start" | sfdisk -q "$img" >&2
  mkfs.vfat -n CDHTINY --offset="$part_start" "$img" "$part_kib" >/dev/null
  cat >"$work/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 cdh.mode=$mode sysrq_always_enabled panic=-1 quiet
CFG
  mcopy -i "$img@@$((part_start * 512))" "$vmlinuz" ::/vmlinuz
  mcopy -i "$img@@$((part_start * 512))" "$initrd" ::/initrd.gz
  mcopy -i "$img@@$((part_start * 512))" "$work/syslinux.cfg" ::/syslinux.cfg
  syslinux --install --offset "$((part_start * 512))" "$img"
  dd if="$mbr_bin" of="$img" bs=440 count=1 conv=notrunc status=none
done
qemu-img convert -f raw -O qcow2 "$work/tiny-normal.raw" "$work/tiny-normal.qcow2"
cp "$vmlinuz" "$work/tiny-vmlinuz"
cp "$initrd" "$work/tiny-initrd.gz"

# --- manifest, then publish ---------------------------------------------------------
files=("${outputs[@]:0:${#outputs[@]}-1}")   # all but manifest.json
{
  printf '{\n  "kernelVersion": "%s",\n  "kernelPackage": "%s",\n' "$kver" "$kpkg"
  printf '  "busybox": "%s",\n' "$(dpkg-deb -f "$work/debs"/busybox-static_*.deb Version)"
  printf '  "netcatTraditional": "%s",\n' "$(dpkg-deb -f "$work/debs"/netcat-traditional_*.deb Version)"
  printf '  "sourcesSha256": "%s",\n' "$sources_sha"
  printf '  "kernelCmdline": "console=ttyS0 cdh.mode=<mode> sysrq_always_enabled panic=-1 quiet",\n'
  printf '  "builtAt": "%s",\n  "files": [\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ird_manifest_files "$work" "${files[@]}"
  printf '  ]\n}\n'
} >"$work/manifest.json"

ird_publish "$work" "$out" "${outputs[@]}"
log "built in $out"
echo "$out"
