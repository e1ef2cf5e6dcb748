#!/usr/bin/env bash
# Builds the tiny guest images that cdh-agent's integration tests and benchmarks boot:
# a Debian cloud kernel and a busybox initramfs on a 64 MiB syslinux-bootable raw disk,
# one image per guest behaviour (cdh.mode=normal|noacpi|selfoff).
#
#   build-tiny-image.sh [--out DIR] [--force]
#
# DIR defaults to ${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images. When every output
# exists and is newer than this script, the script does nothing. On success it prints the
# absolute output directory as its only line on stdout; progress goes to stderr.
#
# Outputs: tiny-{normal,noacpi,selfoff}.raw, tiny-normal.qcow2, tiny-vmlinuz,
# tiny-initrd.gz (for direct kernel boot), manifest.json.
#
# The guest prints, on ttyS0, one line
#   CDH-TINY-READY mode=M vcpus=N memtotal_kb=K uuid=U serial=S disks=vda:SECTORS,...
# then CDH-TINY-POWEROFF right before powering off, CDH-TINY-ACPI-IGNORED when it
# ignores a power-button press (noacpi mode).
set -euo pipefail

script=$(readlink -f "$0")
out="${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images"
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,17p' "$script"; exit 0 ;;
    *) echo "build-tiny-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "build-tiny-image: $*" >&2; }
modes=(normal noacpi selfoff)
outputs=(tiny-normal.raw tiny-noacpi.raw tiny-selfoff.raw tiny-normal.qcow2 tiny-vmlinuz tiny-initrd.gz manifest.json)

mkdir -p "$out"
out=$(cd "$out" && pwd)
chmod 755 "$out"

fresh() {
  [ "$force" = 0 ] || return 1
  local f
  for f in "${outputs[@]}"; do [ "$out/$f" -nt "$script" ] || return 1; done
}
if fresh; then echo "$out"; exit 0; fi

# One build at a time per output directory; a waiter finds the fresh result.
exec 9>"$out/.build.lock"
flock 9
if fresh; then echo "$out"; exit 0; fi

# --- tools --------------------------------------------------------------------------
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need syslinux syslinux
need mcopy mtools
need sfdisk fdisk
need mkfs.vfat dosfstools
need cpio cpio
need xz xz-utils
need gzip gzip
need depmod kmod
need qemu-img qemu-utils
need sha256sum coreutils
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || need_pkgs+=(syslinux-common)
[ -e /usr/lib/EXTLINUX/mbr.bin ] || command -v extlinux >/dev/null 2>&1 || need_pkgs+=(extlinux)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2; }
fi
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[ -e "$mbr_bin" ] || mbr_bin=/usr/lib/EXTLINUX/mbr.bin

work=$(mktemp -d /tmp/cdh-tiny-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# --- kernel and busybox from Debian's archive -----------------------------------------
kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ]; then
  log "apt-cache knows no linux-image-cloud-amd64; running apt-get update"
  apt-get update -qq >&2
  kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || { log "cannot find a cloud kernel package"; exit 1; }
kver=${kpkg#linux-image-}
log "kernel $kver"

mkdir -p "$work/debs" "$work/kroot" "$work/bbroot"
(cd "$work/debs" && apt-get download -q "$kpkg" busybox-static >&2 2>/dev/null) \
  || (cd "$work/debs" && apt-get download "$kpkg" busybox-static >&2)
dpkg-deb -x "$work/debs/${kpkg}"_*.deb "$work/kroot"
dpkg-deb -x "$work/debs"/busybox-static_*.deb "$work/bbroot"

vmlinuz="$work/kroot/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || { log "no kernel image in $kpkg"; exit 1; }
if [ -d "$work/kroot/lib/modules/$kver" ]; then modbase="$work/kroot"
elif [ -d "$work/kroot/usr/lib/modules/$kver" ]; then modbase="$work/kroot/usr"
else log "no modules directory in $kpkg"; exit 1; fi
moddir="$modbase/lib/modules/$kver"
depmod -b "$modbase" "$kver"

# Modules loaded before READY (disk, network, power button) and after it, in the
# background (CD-ROM and SCSI paths for config drives; probing IDE is slow under TCG). The cloud
# kernel has no AHCI driver: a config drive must sit on IDE (machine type pc), not SATA.
early_mods=(virtio_pci virtio_blk virtio_net virtio_console button evdev)
late_mods=(virtio_scsi ata_piix sr_mod sd_mod isofs vfat)

declare -A seen=()
picked=()
resolve() { # appends to $picked the module files (relative to moddir) for $1, deps first
  local name=$1 line path deps i
  line=$(awk -v n="$name" '{ p = $1; sub(/:$/, "", p); b = p; sub(/.*\//, "", b);
           sub(/\.ko(\.(xz|gz|zst))?$/, "", b); gsub(/-/, "_", b);
           if (b == n) { print; exit } }' "$moddir/modules.dep")
  if [ -z "$line" ]; then
    if grep -Eq "/${name//_/[-_]}\.ko\$" "$moddir/modules.builtin" 2>/dev/null; then return 0; fi
    log "module $name is neither a module nor built in"; return 1
  fi
  path=${line%%:*}
  read -r -a deps <<<"${line#*:}"
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
    [ -n "${seen[${deps[$i]}]:-}" ] && continue
    seen[${deps[$i]}]=1; picked+=("${deps[$i]}")
  done
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1; picked+=("$path")
}

root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,root,var/log,var/run,lib/modules}
cp "$work/bbroot/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list-full); do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

add_modules() { # $1 = list file name, rest = module names
  local list=$1 name rel base; shift
  : >"$root/lib/modules/$list"
  for name in "$@"; do
    picked=()
    resolve "$name"
    for rel in "${picked[@]}"; do
      base=$(basename "$rel"); base=${base%.xz}; base=${base%.gz}; base=${base%.zst}
      case "$rel" in
        *.ko.xz) xz -dc "$moddir/$rel" >"$root/lib/modules/$base" ;;
        *.ko.gz) gzip -dc "$moddir/$rel" >"$root/lib/modules/$base" ;;
        *.ko.zst) zstd -qdc "$moddir/$rel" >"$root/lib/modules/$base" ;;
        *) cp "$moddir/$rel" "$root/lib/modules/$base" ;;
      esac
      echo "${base%.ko}" >>"$root/lib/modules/$list"
    done
  done
}
add_modules early.list "${early_mods[@]}"
add_modules late.list "${late_mods[@]}"
log "modules before READY: $(tr '\n' ' ' <"$root/lib/modules/early.list")"

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
disks=
for d in /sys/block/vd*; do
  [ -e "$d" ] || continue
  disks="$disks${disks:+,}${d##*/}:$(cat "$d/size")"
done
say "CDH-TINY-READY mode=$mode vcpus=$vcpus memtotal_kb=$memtotal uuid=$uuid serial=$serial disks=$disks"

(while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/late.list) &

if [ "$mode" = selfoff ]; then
  (sleep 15; say CDH-TINY-POWEROFF; sync; poweroff -f) &
fi

# A shell on the serial console, for a human with `virsh console`.
(while :; do setsid -c sh <"$con" >"$con" 2>&1; sleep 1; done) &

while :; do sleep 3600 & wait; done
INIT
chmod 755 "$root/init"

initrd="$work/initrd.gz"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9n) >"$initrd"

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
{
  printf '{\n  "kernelVersion": "%s",\n  "kernelPackage": "%s",\n' "$kver" "$kpkg"
  printf '  "busybox": "%s",\n' "$(dpkg-deb -f "$work/debs"/busybox-static_*.deb Version)"
  printf '  "kernelCmdline": "console=ttyS0 cdh.mode=<mode> sysrq_always_enabled panic=-1 quiet",\n'
  printf '  "builtAt": "%s",\n  "files": [\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  n=0
  for f in "${outputs[@]}"; do
    [ "$f" = manifest.json ] && continue
    [ $n -gt 0 ] && printf ',\n'
    printf '    { "name": "%s", "size": %d, "sha256": "%s" }' "$f" "$(stat -c %s "$work/$f")" \
      "$(sha256sum "$work/$f" | cut -d' ' -f1)"
    n=$((n + 1))
  done
  printf '\n  ]\n}\n'
} >"$work/manifest.json"

for f in "${outputs[@]}"; do
  chmod 644 "$work/$f"
  mv -f "$work/$f" "$out/$f.tmp"
  mv -f "$out/$f.tmp" "$out/$f"
done
log "built in $out"
echo "$out"
