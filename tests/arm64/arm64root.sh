#!/usr/bin/env bash
# An arm64 Debian bookworm userland on an x86 host: qemu-user-static through binfmt_misc,
# entered with chroot inside a private mount + PID namespace (no sshd, no systemd: the
# arm64 check needs the userland, not a booted board). Driven by tests/arm64/conftest.py.
#
#   arm64root.sh image                        ensure binfmt + the cached root tarball; print it
#   arm64root.sh up DIR                       unpack a fresh root into DIR (DIR must not exist)
#   arm64root.sh exec DIR [--bind SRC:DST]... -- CMD [ARG...]
#                                             run CMD in DIR as root; mounts live only as long
#                                             as CMD (own mount namespace), so none can leak
#   arm64root.sh down DIR                     delete DIR (refuses while anything is mounted there)
#
# The root: mmdebstrap --variant=apt with python3, python3-venv, python3-numpy and
# ca-certificates, the mirror read from this machine's apt config (never hard-coded), this
# machine's local CAs (/usr/local/share/ca-certificates/*.crt) trusted so apt and pip work
# through an intercepting TLS proxy. Built once and cached as a tarball:
#   EDGECTL_ARM64_CACHE   cache folder (default /var/cache/edgectl/arm64); the tarball's name
#                         holds a hash of the recipe, so changing the recipe rebuilds it;
#                         pip's download cache for the root lives in $EDGECTL_ARM64_CACHE/pip
#   EDGECTL_ARM64_MIRROR  override the mirror URI (default: the host's bookworm source)
# Needs root, mmdebstrap, qemu-user-static (and binfmt-support, or it registers the handler
# itself). Every failure prints one "arm64root: ..." line and exits non-zero.
set -euo pipefail

SUITE=bookworm
PACKAGES=python3,python3-venv,python3-numpy,ca-certificates
CACHE=${EDGECTL_ARM64_CACHE:-/var/cache/edgectl/arm64}
QEMU=/usr/bin/qemu-aarch64-static

die() { echo "arm64root: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts, binfmt_misc)"; }

# -- binfmt_misc ---------------------------------------------------------------------------
ensure_binfmt() {
  [ "$(uname -m)" = aarch64 ] && return 0
  [ -x "$QEMU" ] || die "$QEMU missing: apt-get install qemu-user-static binfmt-support"
  local bm=/proc/sys/fs/binfmt_misc
  if [ ! -e "$bm/status" ]; then
    mount -t binfmt_misc binfmt_misc "$bm" || die "cannot mount binfmt_misc on $bm"
  fi
  if [ ! -e "$bm/qemu-aarch64" ]; then
    if command -v update-binfmts >/dev/null 2>&1; then
      update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
  fi
  if [ ! -e "$bm/qemu-aarch64" ]; then
    # No binfmt-support: register by hand. F (fix binary) opens the interpreter now, so it
    # works inside the chroot without copying qemu there.
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$QEMU"':F' \
      >"$bm/register" || die "cannot register the aarch64 handler in $bm/register"
  fi
  grep -qx enabled "$bm/qemu-aarch64" || die "binfmt handler qemu-aarch64 is not enabled"
  grep -q '^flags:.*F' "$bm/qemu-aarch64" \
    || die "binfmt handler qemu-aarch64 lacks the F flag (chroot cannot find qemu)"
}

# -- mirror from the host's apt config -------------------------------------------------------
# Prints "deb URI SUITE main" lines for every bookworm* suite the host uses (deb822 *.sources
# first, then one-line sources.list files).
apt_sources() {
  if [ -n "${EDGECTL_ARM64_MIRROR:-}" ]; then
    echo "deb $EDGECTL_ARM64_MIRROR $SUITE main"
    return 0
  fi
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uris != "")
          for (i = 1; i <= ns; i++) if (s[i] ~ ("^" suite "(-|$)"))
            for (j = 1; j <= nu; j++) print "deb " u[j] " " s[i] " main"
        types = ""; uris = ""; ns = 0; nu = 0
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:" { types = substr($0, index($0, ":") + 1) }
      tolower($1) == "uris:" { uris = $0; nu = split(substr($0, index($0, ":") + 1), u, " ") }
      tolower($1) == "suites:" { ns = split(substr($0, index($0, ":") + 1), s, " ") }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
      | awk -v suite="$SUITE" '$1 == "deb" && $3 ~ ("^" suite "(-|$)") { print "deb " $2 " " $3 " main" }'
  done
}

# -- the cached root tarball -----------------------------------------------------------------
recipe_hash() {
  { echo "$SUITE $PACKAGES"; apt_sources; sed -n '/^build_root()/,/^}/p' "$0";
    cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } | sha256sum | cut -c1-12
}

build_root() {
  local out=$1 tmp=$2
  local -a sources
  mapfile -t sources < <(apt_sources | awk '!seen[$0]++')
  [ "${#sources[@]}" -gt 0 ] || die "no $SUITE source in /etc/apt (set EDGECTL_ARM64_MIRROR)"
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap missing: apt-get install mmdebstrap"
  echo "arm64root: building the $SUITE arm64 root from ${sources[*]}" >&2
  # Docs, man pages and translations are never read in the root: leave them out.
  mmdebstrap --quiet --variant=apt --architectures=arm64 --include="$PACKAGES" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
    --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do [ -f "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done; true' \
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"' \
    --customize-hook='rm -f "$1/etc/resolv.conf"' \
    "$SUITE" "$tmp" "${sources[@]}" \
    || die "mmdebstrap failed (see above)"
  mv "$tmp" "$out"
}

cmd_image() {
  need_root
  ensure_binfmt
  mkdir -p "$CACHE"
  local out="$CACHE/$SUITE-arm64-$(recipe_hash).tar"
  exec 9>"$CACHE/.lock"
  flock 9
  if [ ! -s "$out" ]; then
    local tmp="$CACHE/.building-$$.tar"
    trap 'rm -f "$tmp"' EXIT
    build_root "$out" "$tmp"
    trap - EXIT
    # older recipes' tarballs are dead weight
    find "$CACHE" -maxdepth 1 -name "$SUITE-arm64-*.tar" ! -path "$out" -delete
  fi
  echo "$out"
}

# -- a working copy ------------------------------------------------------------------------
cmd_up() {
  local dir=${1:?usage: arm64root.sh up DIR}
  [ -e "$dir" ] && die "$dir exists: give a new folder"
  local image
  image=$(cmd_image)
  mkdir -p "$dir"
  trap 'rm -rf --one-file-system "$dir"' EXIT
  tar -C "$dir" --numeric-owner -xpf "$image" || die "cannot unpack $image into $dir"
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  trap - EXIT
  echo "$dir"
}

mounted_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo; }

cmd_down() {
  local dir=${1:?usage: arm64root.sh down DIR}
  [ -e "$dir" ] || return 0
  dir=$(cd "$dir" && pwd -P)
  local m
  m=$(mounted_under "$dir")
  [ -z "$m" ] || die "still mounted under $dir: $m"
  rm -rf --one-file-system "$dir"
}

cmd_exec() {
  local dir=${1:?usage: arm64root.sh exec DIR [--bind SRC:DST]... -- CMD...}
  shift
  [ -x "$dir/usr/bin/python3" ] || die "$dir is not an arm64 root (run: arm64root.sh up $dir)"
  need_root
  ensure_binfmt
  dir=$(cd "$dir" && pwd -P)
  local -a binds=("$CACHE/pip:/root/.cache/pip")
  mkdir -p "$CACHE/pip"
  while [ $# -gt 0 ]; do
    case $1 in
      --bind) binds+=("${2:?--bind needs SRC:DST}"); shift 2 ;;
      --) shift; break ;;
      *) die "exec: unknown option $1 (put the command after --)" ;;
    esac
  done
  [ $# -gt 0 ] || die "exec: no command"
  local b
  for b in "${binds[@]}"; do [ -e "${b%%:*}" ] || die "bind source ${b%%:*} does not exist"; done
  # A private mount namespace and PID namespace: every mount and process below ends with CMD.
  unshare --mount --pid --fork --propagation private -- /bin/bash -euc '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/tmp"
    while [ "$1" != -- ]; do
      src=${1%%:*}; dst=$root${1#*:}
      mkdir -p "$dst"
      mount --bind "$src" "$dst"
      shift
    done
    shift
    # No /sys: the host'"'"'s x86 topology there crashes cpuinfo (onnxruntime) on import;
    # without it onnxruntime warns and runs. Bash stays PID 1 (no exec), so a crash in CMD
    # is an exit status, not a hung namespace init.
    chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
      HOME=/root LANG=C.UTF-8 TERM=dumb OMP_NUM_THREADS=1 "$@" || exit $?
  ' arm64root "$dir" "${binds[@]}" -- "$@"
}

case ${1:-} in
  image) shift; cmd_image "$@" ;;
  up) shift; need_root; cmd_up "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) die "usage: arm64root.sh image | up DIR | exec DIR [--bind SRC:DST]... -- CMD... | down DIR" ;;
esac
