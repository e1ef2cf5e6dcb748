# shellcheck shell=sh
# Sourced by the init scripts of the tiny test guest and the rescue system (busybox ash,
# copied into their initramfs as /lib/cdh-disks.sh): how a guest describes its virtio
# disks on the serial console. Kept in one place so that both speak the same format,
# which test/support/serial.ts parses.
#
#   disk list  vda:SECTORS:SERIAL,vdb:SECTORS:SERIAL,...   (SECTORS of 512 bytes)
#   data       vdb=TEXT vdc=hex:HEX ...                      (first bytes of each disk)
#
# SERIAL and TEXT are "safe words": written as they are when every byte is one of
# A-Z a-z 0-9 . _ + @ / = -, else as hex:<lowercase hex of the bytes>. ":" is never in a
# plain word, so "hex:" cannot be mistaken for text. Empty stays empty.

cdh_enc() {
  case "$1" in
    *[!A-Za-z0-9._+@/=-]*) printf 'hex:%s' "$(printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n')" ;;
    *) printf '%s' "$1" ;;
  esac
}

# The virtio disks the kernel sees now, as a disk list (see above).
cdh_disks() {
  _cd_out=
  for _cd_d in /sys/block/vd*; do
    [ -e "$_cd_d/size" ] || continue
    _cd_s=$(cat "$_cd_d/serial" 2>/dev/null)
    _cd_out="$_cd_out${_cd_out:+,}${_cd_d##*/}:$(cat "$_cd_d/size"):$(cdh_enc "$_cd_s")"
  done
  printf '%s' "$_cd_out"
}

# The first bytes of block device $1 up to the first NUL or newline, at most 64, encoded.
# The buffer cache is dropped first so that bytes written by the host since are seen.
cdh_head() {
  blockdev --flushbufs "$1" 2>/dev/null
  cdh_enc "$(dd if="$1" bs=64 count=1 2>/dev/null | tr '\000' '\n' | head -n 1)"
}

# NAME=DATA for every virtio disk but those named in $1 (space separated), space separated.
cdh_data() {
  _cd_out=
  for _cd_d in /sys/block/vd*; do
    _cd_n=${_cd_d##*/}
    case " $1 " in *" $_cd_n "*) continue ;; esac
    [ -b "/dev/$_cd_n" ] || continue
    _cd_out="$_cd_out${_cd_out:+ }$_cd_n=$(cdh_head "/dev/$_cd_n")"
  done
  printf '%s' "$_cd_out"
}
