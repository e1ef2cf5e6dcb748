#!/usr/bin/env bash
# Builds cdh-agent's rescue system: a Debian cloud kernel and a busybox initramfs (with
# dropbear and e2fsprogs from Debian's packages) that an instance in rescue mode boots by
# direct kernel boot, with the instance's own disks attached.
#
#   build-rescue-image.sh [--out DIR] [--force]
#
# DIR defaults to /var/lib/cdh-agent/rescue. When every output exists and is newer than
# this script and its helpers, the script does nothing. On success it prints the absolute
# output directory as its only line on stdout; progress goes to stderr. Packages come from
# Debian's archive through apt-get (the host's sources).
#
# Outputs: rescue-vmlinuz, rescue-initrd.gz, manifest.json.
#
# Kernel command line (the agent sets <kernel>, <initrd>, <cmdline>):
#   console=tty1 console=ttyS0          consoles (ttyS0 last: it carries the lines below)
#   cdh.rescue_hash=HASH                root's password as a sha512-crypt hash, $6$SALT$…
#                                       or $6$rounds=N$SALT$…, unquoted (no spaces in it);
#                                       without a valid one root cannot log in
#   cdh.ip=ADDR/PREFIX cdh.gw=GW        optional static IPv4 on the first NIC (eth0)
#   cdh.dns=IP[,IP]                     optional resolvers
# On ttyS0 it prints
#   CDH-RESCUE-READY disks=vda:SECTORS:SERIAL,... root_password=set|unset
#   CDH-RESCUE-DATA vdX=TEXT            one line per disk (first bytes, as the tiny guest)
# then gives login prompts on ttyS0 and tty1, and runs dropbear (SSH, password login for
# root) on port 22. It mounts no disk of the instance.
set -euo pipefail

script=$(readlink -f "$0")
lib=$(dirname "$script")/lib
# shellcheck source=lib/initramfs.sh
. "$lib/initramfs.sh"
sources=("$script" "$lib/initramfs.sh" "$lib/guest-disks.sh")
out=/var/lib/cdh-agent/rescue
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,28p' "$script"; exit 0 ;;
    *) echo "build-rescue-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "build-rescue-image: $*" >&2; }
outputs=(rescue-vmlinuz rescue-initrd.gz manifest.json)

mkdir -p "$out"
out=$(cd "$out" && pwd)
chmod 755 "$out"

fresh() { [ "$force" = 0 ] && ird_fresh "$out" outputs sources; }
if fresh; then echo "$out"; exit 0; fi

# One build at a time per output directory; a waiter finds the fresh result.
exec 9>"$out/.build.lock"
flock 9
if fresh; then echo "$out"; exit 0; fi

ird_need cpio cpio
ird_need xz xz-utils
ird_need gzip gzip
ird_need depmod kmod
ird_need sha256sum coreutils
ird_install

work=$(mktemp -d /tmp/cdh-rescue-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# --- packages from Debian's archive ---------------------------------------------------
ird_kernel_pkg
log "kernel $kver"
# Programs beyond busybox, with the libraries they need (resolved from the .debs, not the host).
extra_pkgs=(dropbear-bin e2fsprogs)
extra_bins=(usr/sbin/dropbear usr/bin/dropbearkey sbin/e2fsck sbin/resize2fs sbin/tune2fs sbin/dumpe2fs)
mapfile -t closure < <(ird_closure "${extra_pkgs[@]}")
[ "${#closure[@]}" -gt 0 ] || { log "apt-cache gave no dependencies for ${extra_pkgs[*]}"; exit 1; }
ird_download "$work/debs" "$kpkg" busybox-static "${closure[@]}"
ird_unpack_kernel "$work/debs"
mkdir -p "$work/stage"
for p in "${closure[@]}"; do dpkg-deb -x "$(echo "$work/debs/${p}"_*.deb)" "$work/stage"; done

# Before READY: what makes the disks and the NIC appear; after it, in the background:
# filesystems to mount the instance's disks by hand (ext4 is built in), CD-ROM and SCSI.
early_mods=(virtio_pci virtio_blk virtio_net virtio_scsi virtio_console button evdev)
late_mods=(xfs btrfs vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859_1 isofs sd_mod sr_mod ata_piix)

root="$work/initramfs"
ird_busybox_root "$root" "$(echo "$work/debs"/busybox-static_*.deb)"
ird_add_modules "$root" early.list "${early_mods[@]}"
ird_add_modules "$root" late.list "${late_mods[@]}"
log "modules: $(cat "$root/lib/modules/early.list" "$root/lib/modules/late.list" | tr '\n' ' ')"
ird_add_elf "$root" "$work/stage" "${extra_bins[@]}"
cp "$lib/guest-disks.sh" "$root/lib/cdh-disks.sh"

mkdir -p "$root/etc/dropbear" "$root/mnt"
printf 'root:x:0:0:root:/root:/bin/sh\nsshd:x:74:65534:dropbear:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
echo rescue >"$root/etc/hostname"
cat >"$root/etc/motd" <<'MOTD'

cdh-agent rescue system. The instance's disks are attached as /dev/vd* and nothing of
them is mounted: look with `cat /proc/partitions` or `blkid`, then e.g.
`mount /dev/vda1 /mnt`, repair with e2fsck, and `umount /mnt` before leaving rescue
mode. The rescue password is valid only while the instance is in rescue mode.

MOTD
printf 'export PS1="rescue:\\w# "\nexport PATH=/bin:/sbin:/usr/bin:/usr/sbin\n' >"$root/etc/profile"

cat >"$root/init" <<'INIT'
#!/bin/sh
# cdh-agent rescue system: sets root's password from the kernel command line, configures
# the NIC if asked, reports the disks on ttyS0, then hands over to busybox init (getty on
# ttyS0 and tty1). It never mounts a disk of the instance.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
con=/dev/ttyS0
say() { echo "$*" >"$con"; }
hostname rescue

hash= ip= gw= dns=
set -f
for word in $(cat /proc/cmdline); do
  case "$word" in
    cdh.rescue_hash=*) hash=${word#*=} ;;
    cdh.ip=*) ip=${word#*=} ;;
    cdh.gw=*) gw=${word#*=} ;;
    cdh.dns=*) dns=${word#*=} ;;
  esac
done
set +f
hash=${hash#\"}; hash=${hash%\"}

while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/early.list

# root's password: only a well-formed sha512-crypt hash is accepted; otherwise root stays locked.
root_password=unset
if printf '%s\n' "$hash" | grep -Eqx '\$6\$(rounds=[0-9]{4,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}'; then
  printf 'root:%s:19000:0:99999:7:::\n' "$hash" >/etc/shadow
  root_password=set
else
  [ -z "$hash" ] || say "CDH-RESCUE-WARNING cdh.rescue_hash is not a sha512-crypt hash; root stays locked"
  printf 'root:!:19000:0:99999:7:::\n' >/etc/shadow
fi
printf 'sshd:!:19000::::::\n' >>/etc/shadow
chmod 600 /etc/shadow
unset hash

ip link set lo up
if [ -n "$ip" ]; then
  i=0
  while [ $i -lt 50 ] && [ ! -e /sys/class/net/eth0 ]; do usleep 100000; i=$((i + 1)); done
  ip link set eth0 up && ip addr add "$ip" dev eth0 || say "CDH-RESCUE-WARNING cannot set cdh.ip=$ip"
  [ -z "$gw" ] || ip route add default via "$gw" || say "CDH-RESCUE-WARNING cannot set cdh.gw=$gw"
fi
: >/etc/resolv.conf
for d in $(echo "$dns" | tr ',' ' '); do echo "nameserver $d" >>/etc/resolv.conf; done

# Power button: a clean poweroff through init (virsh shutdown works).
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\nsync\npoweroff\n' >/etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /var/log/acpid.log -p /var/run/acpid.pid

# SSH with password login for root (host keys made at the first connection).
dropbear -R -p 22 -P /var/run/dropbear.pid 2>/dev/null || say "CDH-RESCUE-WARNING dropbear did not start"

. /lib/cdh-disks.sh
say "CDH-RESCUE-READY disks=$(cdh_disks) root_password=$root_password"
for d in /sys/block/vd*; do
  [ -e "$d" ] || continue
  say "CDH-RESCUE-DATA ${d##*/}=$(cdh_head "/dev/${d##*/}")"
done

(while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/late.list) &

{
  echo "ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100"
  [ -e /dev/tty1 ] && echo "tty1::respawn:/sbin/getty 38400 tty1 linux"
  echo "::ctrlaltdel:/sbin/reboot"
  echo "::shutdown:/bin/sync"
} >/etc/inittab
exec /sbin/init
INIT
chmod 755 "$root/init"

ird_pack "$root" "$work/rescue-initrd.gz"
cp "$vmlinuz" "$work/rescue-vmlinuz"

# --- manifest, then publish ---------------------------------------------------------
{
  printf '{\n  "kernelVersion": "%s",\n  "kernelPackage": "%s",\n' "$kver" "$kpkg"
  printf '  "packages": {'
  n=0
  for p in busybox-static "${closure[@]}"; do
    [ $n -gt 0 ] && printf ','
    printf '\n    "%s": "%s"' "$p" "$(dpkg-deb -f "$(echo "$work/debs/${p}"_*.deb)" Version)"
    n=$((n + 1))
  done
  printf '\n  },\n'
  printf '  "kernelCmdline": "console=tty1 console=ttyS0 cdh.rescue_hash=<$6$ hash> [cdh.ip=ADDR/PREFIX cdh.gw=GW cdh.dns=IP]",\n'
  printf '  "builtAt": "%s",\n  "files": [\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ird_manifest_files "$work" rescue-vmlinuz rescue-initrd.gz
  printf '  ]\n}\n'
} >"$work/manifest.json"

ird_publish "$work" "$out" "${outputs[@]}"
log "built in $out"
echo "$out"
