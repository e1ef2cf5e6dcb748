#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) cloud guest image that cdh-agent's integration tests
# boot when they need a real guest: systemd, cloud-init, openssh-server and
# qemu-guest-agent on the Debian cloud kernel, GRUB (BIOS) on a 2 GiB sparse MBR disk.
#
#   build-debian-image.sh [--out DIR] [--force]
#
# DIR defaults to ${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images. When the outputs
# exist and debian12-cloud.manifest.json names the sha256 of this script (the build's
# only input besides Debian's archive), the script does nothing. On success it prints
# the absolute output directory as its only line on stdout; progress goes to stderr.
# Packages are fetched with debootstrap/apt from Debian's archive only (CDH_DEBIAN_MIRROR,
# default http://deb.debian.org/debian) and kept in ${CDH_TEST_CACHE}/debs/bookworm.
#
# Outputs: debian12-cloud.raw (2 GiB sparse), debian12-cloud.qcow2, debian12-cloud.manifest.json.
#
# The guest: one ext4 partition (label cloudimg-rootfs) that cloud-init grows to the disk;
# GRUB and the kernel print on ttyS0 at 115200 (console=ttyS0 is the last console);
# net.ifnames=0 (eth0…); cloud-init datasources ConfigDrive, OpenStack, Ec2, NoCloud, None;
# network rendered by cloud-init for systemd-networkd; root login by key only (password
# locked, disable_root false); no SSH host keys and an empty machine-id in the image.
# The initramfs loads ata_piix, sr_mod and isofs so a config drive on an IDE CD-ROM
# (machine type pc; the cloud kernel has no AHCI) is there before cloud-init looks.
set -euo pipefail

script=$(readlink -f "$0")
cache="${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}"
out="$cache/images"
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,24p' "$script"; exit 0 ;;
    *) echo "build-debian-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "build-debian-image: $*" >&2; }
name=debian12-cloud
raw="$name.raw"
qcow2="$name.qcow2"
manifest="$name.manifest.json"
mirror="${CDH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
disk_mib=2048
part_start=2048 # sectors (1 MiB); sectors 1..2047 hold GRUB's core.img

mkdir -p "$out"
out=$(cd "$out" && pwd)
chmod 755 "$out"
inputs_sha=$(sha256sum "$script" | cut -d' ' -f1)

fresh() {
  [ "$force" = 0 ] || return 1
  [ -f "$out/$manifest" ] && [ -f "$out/$raw" ] && [ -f "$out/$qcow2" ] || return 1
  grep -q "\"inputsSha256\": \"$inputs_sha\"" "$out/$manifest" || return 1
  # The sizes the manifest recorded must be the files' sizes (a cheap guard, no hashing).
  local f size
  for f in "$raw" "$qcow2"; do
    size=$(sed -n "s/.*\"name\": \"$f\", \"size\": \\([0-9]*\\).*/\\1/p" "$out/$manifest")
    [ -n "$size" ] && [ "$size" = "$(stat -c %s "$out/$f")" ] || return 1
  done
}
if fresh; then echo "$out"; exit 0; fi

# One build at a time per output directory; a waiter finds the fresh result.
exec 9>"$out/.$name.build.lock"
flock 9
if fresh; then echo "$out"; exit 0; fi
started=$(date +%s)

# --- host tools -----------------------------------------------------------------------
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need debootstrap debootstrap
need sfdisk fdisk
need mkfs.ext4 e2fsprogs
need qemu-img qemu-utils
need sha256sum coreutils
need flock util-linux
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2; }
fi

# Removes a work directory, unmounting whatever is still mounted under it first; never
# deletes through a mount (it leaves the directory then).
remove_workdir() {
  local d=$1 m
  for m in $(awk -v r="$d" 'index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  if awk -v r="$d" 'index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    log "leaving $d in place: something is still mounted under it"
  else
    rm -rf "$d"
  fi
}
# Work directories a killed build left behind (we hold the lock: no build is running).
for stale in "$out/.$name.build."*; do
  if [ -d "$stale" ]; then log "removing $stale, left by an interrupted build"; remove_workdir "$stale"; fi
done

# The work directory sits beside the outputs (same filesystem: the final mv is a rename).
work=$(mktemp -d "$out/.$name.build.XXXXXX")
root="$work/root"
debs="$cache/debs/$suite"
mkdir -p "$root" "$debs"
cleanup() { remove_workdir "$work"; }
trap cleanup EXIT

# --- the root filesystem ------------------------------------------------------------
# debootstrap with --include of cloud-init trips over a virtual dependency
# (python3-cffi-backend-api-max): bootstrap minbase, then apt-get install in the chroot.
log "debootstrap $suite from $mirror"
t0=$(date +%s)
debootstrap --variant=minbase --arch=amd64 --components=main --cache-dir="$debs" \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
log "debootstrap took $(( $(date +%s) - t0 )) s"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
EOF
cat >"$root/etc/apt/apt.conf.d/90cdh" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cat >"$root/etc/dpkg/dpkg.cfg.d/90cdh-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
# No daemon starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
# The initramfs: every driver it may need, and the CD-ROM path loaded up front.
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo 'MODULES=most' >"$root/etc/initramfs-tools/conf.d/90cdh"
mkdir -p "$root/etc/initramfs-tools"
printf '%s\n' virtio_pci virtio_blk virtio_scsi virtio_net ata_piix sr_mod isofs >>"$root/etc/initramfs-tools/modules"

mount -t proc proc "$root/proc"
pkgs=(
  linux-image-cloud-amd64 initramfs-tools grub-pc-bin
  systemd systemd-sysv udev dbus
  cloud-init cloud-guest-utils e2fsprogs fdisk
  openssh-server qemu-guest-agent
  curl iproute2 sudo netbase procps
)
log "apt-get install ${pkgs[*]}"
t0=$(date +%s)
cp -n "$debs"/*.deb "$root/var/cache/apt/archives/" 2>/dev/null || true
in_root apt-get update -qq >&2
in_root apt-get install -y -qq -o Dpkg::Options::=--force-unsafe-io "${pkgs[@]}" >"$work/apt.log" 2>&1 \
  || { tail -n 40 "$work/apt.log" >&2; log "apt-get install failed"; exit 1; }
cp -n "$root"/var/cache/apt/archives/*.deb "$debs/" 2>/dev/null || true
log "apt-get install took $(( $(date +%s) - t0 )) s"

kver=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
[ -n "$kver" ] && [ -f "$root/boot/initrd.img-$kver" ] || { log "no kernel or initramfs in /boot"; exit 1; }
kpkg="linux-image-$kver"
log "kernel $kver"
for m in ata_piix sr_mod isofs virtio_blk virtio_net; do
  if ! grep -Eq "/${m//_/[-_]}\.ko(\.[a-z]+)?:" "$root/lib/modules/$kver/modules.dep" \
     && ! grep -Eq "/${m//_/[-_]}\.ko\$" "$root/lib/modules/$kver/modules.builtin"; then
    log "kernel $kver has no $m"; exit 1
  fi
done

# --- configuration --------------------------------------------------------------------
rootfs_uuid=$(cat /proc/sys/kernel/random/uuid)
cmdline="root=UUID=$rootfs_uuid ro console=tty0 console=ttyS0,115200n8 net.ifnames=0"

echo debian >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
printf 'UUID=%s / ext4 defaults,errors=remount-ro 0 1\n' "$rootfs_uuid" >"$root/etc/fstab"

cat >"$root/etc/cloud/cloud.cfg.d/90_cdh.cfg" <<'EOF'
# cdh-agent test image
datasource_list: [ConfigDrive, OpenStack, Ec2, NoCloud, None]
disable_root: false
ssh_pwauth: false
ssh_deletekeys: true
# RSA host keys take many seconds to make under TCG; ed25519 and ecdsa do not.
ssh_genkeytypes: [ed25519, ecdsa]
# No locales package in the image: leave the locale alone (C.UTF-8).
locale: false
growpart:
  mode: auto
  devices: ['/']
resize_rootfs: true
system_info:
  network:
    renderers: ['networkd']
EOF
# Nothing in the image may decide the network but cloud-init.
rm -f "$root/etc/cloud/cloud.cfg.d/"*network-config-disabled* 2>/dev/null || true

# systemd-networkd applies what cloud-init renders; wait-online gives up quickly.
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/90-cdh.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20
EOF
# sshd still starts if cloud-init did not make host keys (it normally does, first).
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/90-cdh-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || /usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
EOF
mkdir -p "$root/etc/ssh/sshd_config.d"
cat >"$root/etc/ssh/sshd_config.d/90-cdh.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
# Host-side drivers a guest never uses; loading them costs boot time under TCG.
printf 'blacklist %s\n' kvm kvm_amd kvm_intel powernow_k8 acpi_cpufreq >"$root/etc/modprobe.d/90-cdh-blacklist.conf"
# A short journal, kept in memory only.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' >"$root/etc/systemd/journald.conf.d/90-cdh.conf"

in_root systemctl enable systemd-networkd.service ssh.service >&2
in_root systemctl enable serial-getty@ttyS0.service >&2 || true
in_root systemctl enable cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service >&2 || true
# qemu-guest-agent is started by udev when its virtio-serial port appears; enable what can be.
in_root systemctl enable qemu-guest-agent.service >&2 2>/dev/null || true
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service \
            fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service getty@tty1.service; do
  in_root systemctl mask "$unit" >/dev/null 2>&1 || true
done

in_root passwd -l root >/dev/null
# GRUB: modules and config in /boot/grub; core.img is built below and written before partition 1.
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
kernel_path=/boot/vmlinuz-$kver
initrd_path=/boot/initrd.img-$kver
[ -L "$root/vmlinuz" ] && [ -L "$root/initrd.img" ] && { kernel_path=/vmlinuz; initrd_path=/initrd.img; }
cat >"$root/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
search --no-floppy --fs-uuid --set=root $rootfs_uuid
echo 'Loading Linux $kver ...'
linux $kernel_path $cmdline
initrd $initrd_path
boot
EOF
cat >"$work/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $rootfs_uuid
set prefix=(\$root)/boot/grub
EOF
cp "$work/early.cfg" "$root/tmp/early.cfg"
in_root grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub \
  biosdisk part_msdos ext2 search search_fs_uuid normal configfile linux serial terminal echo test gzio
mv "$root/tmp/core.img" "$work/core.img"
cp "$root/usr/lib/grub/i386-pc/boot.img" "$work/boot.img"
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -lt $((part_start - 1)) ] || { log "core.img ($core_sectors sectors) does not fit before the partition"; exit 1; }

cloud_init_version=$(in_root dpkg-query -W -f='${Version}' cloud-init)
kernel_pkg_version=$(in_root dpkg-query -W -f='${Version}' "$kpkg")
in_root dpkg-query -W -f='${Package} ${Version}\n' >"$work/packages.txt"

# --- scrub what must not be baked in -------------------------------------------------
umount "$root/proc"
in_root apt-get clean
rm -f "$root/usr/sbin/policy-rc.d" "$root/tmp/early.cfg"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
       "$root"/var/lib/dpkg/*-old "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/* \
       "$root"/var/lib/cloud/* "$root"/root/.bash_history
rm -f "$root"/etc/ssh/ssh_host_*
# What debootstrap unpacked before the dpkg path filter was in place.
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
: >"$root/etc/resolv.conf"
find "$root/var/log" -type f -exec truncate -s 0 {} +

# --- the disk ------------------------------------------------------------------------
# ext4 written straight into the image at the partition's offset (mkfs.ext4 -d: no loop
# device, no mount), then the partition table, GRUB's boot.img (MBR code) and core.img.
img="$work/$raw"
truncate -s "${disk_mib}M" "$img"
part_kib=$(( (disk_mib * 1024 * 1024 - part_start * 512) / 1024 ))
log "mkfs.ext4 -d ($(du -sm "$root" | cut -f1) MiB of files)"
mkfs.ext4 -q -F -L cloudimg-rootfs -U "$rootfs_uuid" -E offset=$((part_start * 512)) -m 1 \
  -d "$root" "$img" "${part_kib}k" >&2
printf 'label: dos\nstart=%d, type=83, bootable\n' "$part_start" \
  | sfdisk -q --wipe never --wipe-partitions never "$img" >&2
dd if="$work/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$img" "$work/$qcow2"
chmod 644 "$img" "$work/$qcow2"
build_seconds=$(( $(date +%s) - started ))

# --- manifest, then publish -----------------------------------------------------------
file_entry() { printf '    { "name": "%s", "size": %d, "sha256": "%s" }' "$1" "$(stat -c %s "$work/$1")" \
  "$(sha256sum "$work/$1" | cut -d' ' -f1)"; }
{
  printf '{\n  "name": "%s",\n  "inputsSha256": "%s",\n  "inputs": ["scripts/build-debian-image.sh"],\n' "$name" "$inputs_sha"
  printf '  "suite": "%s",\n  "mirror": "%s",\n' "$suite" "$mirror"
  printf '  "kernelPackage": "%s",\n  "kernelPackageVersion": "%s",\n  "kernelVersion": "%s",\n' "$kpkg" "$kernel_pkg_version" "$kver"
  printf '  "cloudInitVersion": "%s",\n  "rootfsUuid": "%s",\n  "rootfsLabel": "cloudimg-rootfs",\n' "$cloud_init_version" "$rootfs_uuid"
  printf '  "kernelCmdline": "%s",\n  "diskBytes": %d,\n  "partitionStartSector": %d,\n' "$cmdline" $((disk_mib * 1024 * 1024)) "$part_start"
  printf '  "packages": %d,\n  "builtAt": "%s",\n  "buildSeconds": %d,\n  "files": [\n' \
    "$(wc -l <"$work/packages.txt")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$build_seconds"
  file_entry "$raw"; printf ',\n'; file_entry "$qcow2"; printf '\n  ]\n}\n'
} >"$work/$manifest"
chmod 644 "$work/$manifest"
cp "$work/packages.txt" "$out/$name.packages.txt.tmp" && mv -f "$out/$name.packages.txt.tmp" "$out/$name.packages.txt"

# The manifest goes last: until it names this script's hash, the cache is not valid.
rm -f "$out/$manifest"
mv -f "$work/$raw" "$out/$raw"
mv -f "$work/$qcow2" "$out/$qcow2"
mv -f "$work/$manifest" "$out/$manifest"
log "built in $build_seconds s: $out/$raw ($(du -h "$out/$raw" | cut -f1) used), $out/$qcow2 ($(du -h "$out/$qcow2" | cut -f1))"
echo "$out"
