#!/usr/bin/env bash
# A fresh Debian bookworm machine for the set-up test (tests/fresh): what a user has before
# the README's first command. A debootstrap minbase root with systemd (booted with
# systemd-nspawn as PID 1) and make, and nothing else: no python3, none of the Makefile's
# packages, empty apt lists. Its own network namespace behind a veth pair with NAT, so
# its apt and pip reach the mirrors and PyPI; the machine's local wheel folders are bound
# read-only at their own paths and its pip configuration (files and PIP_* variables)
# carried in, so pip finds the torch and CUDA wheels this machine keeps on disk as it does
# here (nothing is installed ahead of the README's commands).
#
#   freshhost.sh build              make (or reuse) the cached root tarball
#   freshhost.sh up DIR SRC         unpack a fresh copy under DIR, copy the folder SRC (a
#                                   clone of the repository) to /root/edgectl, boot it
#   freshhost.sh exec DIR CMD...    run CMD as root inside the booted machine
#   freshhost.sh down DIR           stop it, remove netns, veth, NAT rules and DIR/root
#
# Settings (environment): EDGECTL_FRESHHOST_CACHE (default /var/cache/edgectl/freshhost),
# EDGECTL_FRESHHOST_NET (first three octets of its /24, default 10.205.0),
# EDGECTL_FRESHHOST_NAME (machine/netns name, default edgefresh). Needs root, debootstrap,
# systemd-container, iproute2, iptables (the Makefile's BOARD_DEBS).
set -euo pipefail

CACHE=${EDGECTL_FRESHHOST_CACHE:-/var/cache/edgectl/freshhost}
NET=${EDGECTL_FRESHHOST_NET:-10.205.0}
NAME=${EDGECTL_FRESHHOST_NAME:-edgefresh}
HOST_ADDR=$NET.1
ADDR=$NET.2
VETH_HOST=ve-$NAME
VETH_GUEST=vb-$NAME
TARBALL=$CACHE/bookworm-minbase.tar
# Bump when the package list or the root's setup below changes: the cache is rebuilt.
ROOT_VERSION=1
# What the fresh machine has: an init, and make to type the README's commands with.
PACKAGES=systemd,systemd-sysv,dbus,ca-certificates,make
# This machine's local Python package folders (pip's find-links and file:// indexes).
WHEEL_DIRS=(/opt/wheels /opt/pypi /opt/pypi-more)

log() { echo "freshhost: $*" >&2; }
die() { echo "freshhost: error: $*" >&2; exit 1; }

# The Debian mirror this machine's apt uses (deb822 sources first, then sources.list).
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
          /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
  fi
  [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources.list.d/*.sources or sources.list"
  echo "$uri"
}

security_mirror() {
  awk '/^URIs:/ && /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
}

cmd_build() {
  if [ -f "$TARBALL" ] && [ "$(cat "$CACHE/root-version" 2>/dev/null)" = "$ROOT_VERSION" ]; then
    log "cached root: $TARBALL"
    return 0
  fi
  mkdir -p "$CACHE"
  local mirror sec work r
  mirror=$(debian_mirror)
  sec=$(security_mirror)
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "debootstrap bookworm (minbase + $PACKAGES) from $mirror"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/root" "$mirror" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  r=$work/root
  {
    echo "deb $mirror bookworm main"
    echo "deb $mirror bookworm-updates main"
    [ -n "$sec" ] && echo "deb $sec bookworm-security main"
  } >"$r/etc/apt/sources.list"
  # This machine's local CAs (the intercepting proxy), as a site's image would carry.
  mkdir -p "$r/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$r" update-ca-certificates >/dev/null
  echo "$NAME" >"$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$NAME" >"$r/etc/hosts"
  : >"$r/etc/machine-id"
  chroot "$r" systemctl mask console-getty.service getty@tty1.service \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  echo "nameserver $(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)" >"$r/etc/resolv.conf"
  # As a freshly flashed image: no package lists, no downloaded packages.
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin
  mkdir -p "$r/var/lib/apt/lists/partial"
  log "packing $TARBALL"
  tar -C "$r" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  echo "$ROOT_VERSION" >"$CACHE/root-version"
  rm -rf "$work"
  trap - EXIT
}

leader() {
  # PID 1 of the booted machine: the child of systemd-nspawn.
  local dir=$1
  pgrep -P "$(cat "$dir/nspawn.pid")" | head -n1
}

cmd_exec() {
  local dir=${1:?usage: freshhost.sh exec DIR CMD...}
  shift
  local pid
  pid=$(leader "$dir") || die "the machine in $dir is not running"
  [ -n "$pid" ] || die "the machine in $dir is not running"
  # A login's environment, plus this machine's pip settings (PIP_*: its wheel folders).
  local pipenv=()
  mapfile -t pipenv < <(env | grep '^PIP_' || true)
  nsenter --target "$pid" --mount --uts --ipc --net --pid --root --wd=/root -- \
    /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${pipenv[@]}" "$@"
}

cmd_up() {
  local dir=${1:?usage: freshhost.sh up DIR SRC} src=${2:?usage: freshhost.sh up DIR SRC}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cmd_build
  cmd_down "$dir" >/dev/null 2>&1 || true
  mkdir -p "$dir/root"
  log "unpacking a fresh root in $dir/root"
  tar -C "$dir/root" --numeric-owner -xf "$TARBALL"
  cp -a "$src" "$dir/root/root/edgectl"
  # This machine's pip configuration, global and root's own (its local wheel folders and
  # indexes, its torch cap): pip there finds the files on disk as pip here does.
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$dir/root/etc/pip.conf"
  [ -d /etc/xdg/pip ] && mkdir -p "$dir/root/etc/xdg" && cp -a /etc/xdg/pip "$dir/root/etc/xdg/"
  if [ -f "$HOME/.config/pip/pip.conf" ]; then
    mkdir -p "$dir/root/root/.config/pip"
    cp "$HOME/.config/pip/pip.conf" "$dir/root/root/.config/pip/pip.conf"
  fi
  local binds=() d
  for d in "${WHEEL_DIRS[@]}"; do
    [ -d "$d" ] && binds+=("--bind-ro=$d")
  done
  ip netns add "$NAME"
  ip link add "$VETH_HOST" type veth peer name "$VETH_GUEST"
  ip link set "$VETH_GUEST" netns "$NAME"
  ip addr add "$HOST_ADDR/24" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip netns exec "$NAME" ip addr add "$ADDR/24" dev "$VETH_GUEST"
  ip netns exec "$NAME" ip link set "$VETH_GUEST" up
  ip netns exec "$NAME" ip link set lo up
  ip netns exec "$NAME" ip route add default via "$HOST_ADDR"
  sysctl -q -w net.ipv4.ip_forward=1
  iptables -t nat -A POSTROUTING -s "$NET.0/24" ! -o "$VETH_HOST" -j MASQUERADE -m comment --comment "edgectl-freshhost-$NAME"
  iptables -A FORWARD -i "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-freshhost-$NAME"
  iptables -A FORWARD -o "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-freshhost-$NAME"
  # A private cgroup2 hierarchy: this machine's own PID 1 is not systemd (see testhost.sh).
  log "booting $NAME with systemd-nspawn"
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-1} \
  SYSTEMD_NSPAWN_USE_CGNS=${SYSTEMD_NSPAWN_USE_CGNS:-1} \
    setsid systemd-nspawn --quiet --boot --register=no --keep-unit \
      --machine="$NAME" --directory="$dir/root" \
      --network-namespace-path="/run/netns/$NAME" "${binds[@]}" \
      --capability=all --console=passive \
      </dev/null >"$dir/nspawn.log" 2>&1 &
  echo $! >"$dir/nspawn.pid"
  local i state
  for i in $(seq 1 120); do
    if ! kill -0 "$(cat "$dir/nspawn.pid")" 2>/dev/null; then
      tail -n 40 "$dir/nspawn.log" >&2
      die "systemd-nspawn exited while booting (log: $dir/nspawn.log)"
    fi
    # (|| outside: die inside cmd_exec exits the whole substitution, skipping an inner || true)
    state=$(cmd_exec "$dir" systemctl is-system-running 2>/dev/null) || true
    case "$state" in
      running|degraded) log "$NAME up ($state) after ${i}s"; return 0 ;;
    esac
    sleep 1
  done
  tail -n 40 "$dir/nspawn.log" >&2
  die "$NAME did not finish booting within 120 s (last state: ${state:-none})"
}

cmd_down() {
  local dir=${1:?usage: freshhost.sh down DIR}
  local pid
  if [ -f "$dir/nspawn.pid" ]; then
    pid=$(cat "$dir/nspawn.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/nspawn.pid"
  fi
  while iptables -t nat -D POSTROUTING -s "$NET.0/24" ! -o "$VETH_HOST" -j MASQUERADE -m comment --comment "edgectl-freshhost-$NAME" 2>/dev/null; do :; done
  while iptables -D FORWARD -i "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-freshhost-$NAME" 2>/dev/null; do :; done
  while iptables -D FORWARD -o "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-freshhost-$NAME" 2>/dev/null; do :; done
  ip link del "$VETH_HOST" 2>/dev/null || true
  ip netns del "$NAME" 2>/dev/null || true
  if [ -d "$dir/root" ]; then
    grep -F " $dir/root" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$dir/root"
  fi
}

case "${1:-}" in
  build) cmd_build ;;
  up) shift; cmd_up "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) echo "usage: $0 build | up DIR SRC | exec DIR CMD... | down DIR" >&2; exit 2 ;;
esac
