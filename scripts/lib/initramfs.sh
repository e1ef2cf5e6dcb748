# shellcheck shell=bash
# Shared by scripts/build-tiny-image.sh and scripts/build-rescue-image.sh (sourced, not run):
# fetch a Debian cloud kernel, busybox and other packages from Debian's archive with
# apt-get, pick kernel modules with their dependencies, lay out a busybox root and pack
# it as a gzip'd newc cpio. Every function reports on stderr through `log`, which the
# sourcing script defines.
#
# State the functions share (globals): work (scratch dir), kpkg, kver, vmlinuz, moddir.

# Installs the Debian packages behind missing commands: ird_need CMD PKG ...; ird_install.
ird_need_pkgs=()
ird_need() { command -v "$1" >/dev/null 2>&1 || ird_need_pkgs+=("$2"); }
ird_install() {
  [ "${#ird_need_pkgs[@]}" -gt 0 ] || return 0
  log "installing ${ird_need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${ird_need_pkgs[@]}" >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${ird_need_pkgs[@]}" >&2; }
  ird_need_pkgs=()
}

# True when every file named after $1 (a directory) exists and is newer than every file
# in the array named by $2 (the scripts the outputs come from).
ird_fresh() {
  local dir=$1 f s; local -n _outs=$2 _srcs=$3
  for f in "${_outs[@]}"; do
    for s in "${_srcs[@]}"; do [ "$dir/$f" -nt "$s" ] || return 1; done
  done
}

# Sets kpkg and kver: the kernel package linux-image-cloud-amd64 currently depends on.
ird_kernel_pkg() {
  _ird_kpkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null \
      | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
  }
  kpkg=$(_ird_kpkg)
  if [ -z "$kpkg" ]; then
    log "apt-cache knows no linux-image-cloud-amd64; running apt-get update"
    apt-get update -qq >&2
    kpkg=$(_ird_kpkg)
  fi
  [ -n "$kpkg" ] || { log "cannot find a cloud kernel package"; return 1; }
  kver=${kpkg#linux-image-}
}

# Downloads .debs from Debian's archive into $1 (apt-get download, the host's sources).
ird_download() {
  local dir=$1; shift
  mkdir -p "$dir"
  (cd "$dir" && apt-get download -q "$@" >&2 2>/dev/null) || (cd "$dir" && apt-get download "$@" >&2)
}

# The packages $@ and everything they Depend/Pre-Depend on, recursively (names only).
ird_closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" 2>/dev/null \
    | awk '/^[a-z0-9]/ { print $1 }' | grep -v '^<' | sort -u
}

# Unpacks the kernel .deb found in $1 into $work/kroot; sets vmlinuz and moddir; runs depmod.
ird_unpack_kernel() {
  local debs=$1 modbase
  mkdir -p "$work/kroot"
  dpkg-deb -x "$debs/${kpkg}"_*.deb "$work/kroot"
  vmlinuz="$work/kroot/boot/vmlinuz-$kver"
  [ -f "$vmlinuz" ] || { log "no kernel image in $kpkg"; return 1; }
  if [ -d "$work/kroot/lib/modules/$kver" ]; then modbase="$work/kroot"
  elif [ -d "$work/kroot/usr/lib/modules/$kver" ]; then modbase="$work/kroot/usr"
  else log "no modules directory in $kpkg"; return 1; fi
  moddir="$modbase/lib/modules/$kver"
  depmod -b "$modbase" "$kver"
}

declare -A ird_seen=()
ird_picked=()
# Appends to ird_picked the module files (relative to moddir) for $1, dependencies first.
# A module built into the kernel adds nothing.
ird_resolve() {
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
    [ -n "${ird_seen[${deps[$i]}]:-}" ] && continue
    ird_seen[${deps[$i]}]=1; ird_picked+=("${deps[$i]}")
  done
  [ -n "${ird_seen[$path]:-}" ] && return 0
  ird_seen[$path]=1; ird_picked+=("$path")
}

# ird_add_modules ROOT LISTNAME MODULE...: copies the modules (uncompressed) with their
# dependencies into ROOT/lib/modules and writes their names, in load order, to
# ROOT/lib/modules/LISTNAME (one per line, for `insmod /lib/modules/NAME.ko`).
ird_add_modules() {
  local root=$1 list=$2 name rel base; shift 2
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/$list"
  for name in "$@"; do
    ird_picked=()
    ird_resolve "$name"
    for rel in "${ird_picked[@]}"; do
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

# ird_busybox_root ROOT BUSYBOX_DEB: the directory skeleton and every busybox applet.
ird_busybox_root() {
  local root=$1 deb=$2 applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,root,var/log,var/run,lib/modules}
  mkdir -p "$work/bbroot"
  dpkg-deb -x "$deb" "$work/bbroot"
  cp "$work/bbroot/bin/busybox" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done
}

# ird_add_elf ROOT STAGE FILE...: copies dynamically linked programs from STAGE (a tree of
# unpacked .debs, which must hold Debian's libc6) into ROOT at the same paths, with the
# shared libraries they need, resolved by STAGE's own dynamic loader (`ld.so --list`).
ird_add_elf() {
  local root=$1 stage=$2 f lib ld libpath; shift 2
  ld="$stage/lib64/ld-linux-x86-64.so.2"
  [ -e "$ld" ] || ld="$stage/usr/lib64/ld-linux-x86-64.so.2"
  [ -e "$ld" ] || { log "no dynamic loader in $stage"; return 1; }
  libpath="$stage/lib/x86_64-linux-gnu:$stage/usr/lib/x86_64-linux-gnu"
  mkdir -p "$root/lib64" "$root/lib/x86_64-linux-gnu"
  cp -L "$ld" "$root/lib64/ld-linux-x86-64.so.2"
  for f in "$@"; do
    [ -e "$stage/$f" ] || { log "no $f in the unpacked packages"; return 1; }
    mkdir -p "$root/$(dirname "$f")"
    cp -L "$stage/$f" "$root/$f"
    # ld.so --list prints "libfoo.so.1 => /path/libfoo.so.1 (0x…)"; copy each as its soname.
    while read -r lib; do
      cp -L "$lib" "$root/lib/x86_64-linux-gnu/$(basename "$lib")"
    done < <("$ld" --library-path "$libpath" --list "$stage/$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
  done
}

# ird_pack ROOT OUT: a reproducible gzip'd newc cpio of ROOT owned by root.
ird_pack() {
  (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9n) >"$2"
}

# ird_manifest_files DIR FILE...: the JSON array body listing each file's size and sha256.
ird_manifest_files() {
  local dir=$1 f n=0; shift
  for f in "$@"; do
    [ $n -gt 0 ] && printf ',\n'
    printf '    { "name": "%s", "size": %d, "sha256": "%s" }' "$f" "$(stat -c %s "$dir/$f")" \
      "$(sha256sum "$dir/$f" | cut -d' ' -f1)"
    n=$((n + 1))
  done
  printf '\n'
}

# ird_publish WORKDIR OUTDIR FILE...: moves the outputs into place, each atomically.
ird_publish() {
  local from=$1 to=$2 f; shift 2
  for f in "$@"; do
    chmod 644 "$from/$f"
    mv -f "$from/$f" "$to/$f.tmp"
    mv -f "$to/$f.tmp" "$to/$f"
  done
}
