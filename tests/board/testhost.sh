#!/usr/bin/env bash
# A real Debian bookworm "board" for the board suite (tests/board, docs/fleet.md):
# a debootstrap root booted with systemd-nspawn (systemd as PID 1), in its own network
# namespace behind a veth pair with NAT, sshd on the board address.
#
# The root is what a freshly flashed image holds, nothing arranged for the tests: a
# minimal Debian with systemd, sshd, python3 and sudo, EMPTY apt lists (images ship
# without them), no python3-apt, none of the packages the edge_agent role installs, and
# an admin user `pi` with passwordless sudo as Raspberry Pi OS's imager makes it
# (/etc/sudoers.d/010_pi-nopasswd). `up` puts one new SSH key in pi's and root's
# authorized_keys (the imager's "allow public-key authentication" step; root's is the
# suite's own way in to look around, never the deploy's).
#
#   testhost.sh build        make (or reuse) the cached root tarball
#   testhost.sh up DIR       unpack a fresh copy under DIR, boot it, wait for ssh;
#                            writes DIR/env (BOARD_ADDR, HOST_ADDR, SSH_KEY, ADMIN_USER, ...)
#   testhost.sh kill DIR     SIGKILL the machine (its PID 1, so every process in it, and
#                            systemd-nspawn): a power cut as far as the board can tell
#   testhost.sh boot DIR     boot DIR/root again as it was left (after `kill`), wait for ssh
#   testhost.sh down DIR     stop the machine, remove netns, veth, NAT rules and DIR/root
#
# Settings (environment): EDGECTL_TESTHOST_CACHE (cache folder, default
# /var/cache/edgectl/testhost), EDGECTL_TESTHOST_NET (first three octets of the /24,
# default 10.203.0), EDGECTL_TESTHOST_NAME (machine/netns name, default edgeboard).
# Needs root, debootstrap, systemd-container, iproute2, iptables, openssh-client.
set -euo pipefail

CACHE=${EDGECTL_TESTHOST_CACHE:-/var/cache/edgectl/testhost}
NET=${EDGECTL_TESTHOST_NET:-10.203.0}
NAME=${EDGECTL_TESTHOST_NAME:-edgeboard}
HOST_ADDR=$NET.1
BOARD_ADDR=$NET.2
VETH_HOST=ve-$NAME
VETH_BOARD=vb-$NAME
# Bump when the package list or the root's setup below changes: the cache is rebuilt
# (one tarball per version, so checkouts of other versions keep theirs).
ROOT_VERSION=3
TARBALL=$CACHE/bookworm-root-v$ROOT_VERSION.tar
ADMIN_USER=pi
# What a flashed image has; never python3-apt, python3-venv, python3-numpy or anything
# else the role installs (tests/board/test_board.py checks that they are missing).
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,sudo,ca-certificates,iproute2,libpam-systemd

log() { echo "testhost: $*" >&2; }
die() { echo "testhost: error: $*" >&2; exit 1; }

# The Debian mirror this machine's apt uses (deb822 sources first, then sources.list):
# never a mirror hard-coded in the repository.
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
  if [ -f "$TARBALL" ]; then
    log "cached root: $TARBALL"
    return 0
  fi
  mkdir -p "$CACHE"
  local mirror sec work
  mirror=$(debian_mirror)
  sec=$(security_mirror)
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "debootstrap bookworm from $mirror (a few minutes)"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/root" "$mirror" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  local r=$work/root
  # apt sources like this machine's, and its local CAs (the intercepting proxy) so the
  # board's apt and pip reach the registries.
  {
    echo "deb $mirror bookworm main"
    echo "deb $mirror bookworm-updates main"
    [ -n "$sec" ] && echo "deb $sec bookworm-security main"
  } >"$r/etc/apt/sources.list"
  mkdir -p "$r/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$r" update-ca-certificates >/dev/null
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$r/etc/pip.conf"
  echo "$NAME" >"$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$NAME" >"$r/etc/hosts"
  : >"$r/etc/machine-id"
  # The network is configured by the host (static address in the namespace), sshd
  # listens on the board address; no getty on the nspawn console.
  chroot "$r" systemctl enable ssh >/dev/null 2>&1
  chroot "$r" systemctl mask console-getty.service getty@tty1.service \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  mkdir -p "$r/root/.ssh" && chmod 700 "$r/root/.ssh"
  printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
    >"$r/etc/ssh/sshd_config.d/edgectl-testhost.conf"
  rm -f "$r"/etc/ssh/ssh_host_*
  chroot "$r" ssh-keygen -A >/dev/null
  echo "nameserver $(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)" >"$r/etc/resolv.conf"
  # The admin user a flashing tool creates: passwordless sudo, no password login.
  chroot "$r" useradd --create-home --shell /bin/bash --groups sudo,adm "$ADMIN_USER"
  echo "$ADMIN_USER ALL=(ALL) NOPASSWD: ALL" >"$r/etc/sudoers.d/010_pi-nopasswd"
  chmod 440 "$r/etc/sudoers.d/010_pi-nopasswd"
  install -d -m 700 -o "$(stat -c %u "$r/home/$ADMIN_USER")" -g "$(stat -c %g "$r/home/$ADMIN_USER")" \
    "$r/home/$ADMIN_USER/.ssh"
  # As images ship: no package lists (debootstrap leaves the ones it used), no caches.
  find "$r/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf {} +
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin \
    "$r/var/lib/apt/periodic/update-success-stamp"
  log "packing $TARBALL"
  tar -C "$r" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$work"
  trap - EXIT
}

cmd_up() {
  local dir=${1:?usage: testhost.sh up DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cmd_build
  # Leftovers of an earlier run that died before `down`.
  cmd_down "$dir" >/dev/null 2>&1 || true
  mkdir -p "$dir/root"
  log "unpacking a fresh root in $dir/root"
  tar -C "$dir/root" --numeric-owner -xf "$TARBALL"
  # Network namespace + veth pair; NAT so the board reaches the registries.
  ip netns add "$NAME"
  ip link add "$VETH_HOST" type veth peer name "$VETH_BOARD"
  ip link set "$VETH_BOARD" netns "$NAME"
  ip addr add "$HOST_ADDR/24" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip netns exec "$NAME" ip addr add "$BOARD_ADDR/24" dev "$VETH_BOARD"
  ip netns exec "$NAME" ip link set "$VETH_BOARD" up
  ip netns exec "$NAME" ip link set lo up
  ip netns exec "$NAME" ip route add default via "$HOST_ADDR"
  sysctl -q -w net.ipv4.ip_forward=1
  iptables -t nat -A POSTROUTING -s "$NET.0/24" ! -o "$VETH_HOST" -j MASQUERADE -m comment --comment "edgectl-testhost-$NAME"
  iptables -A FORWARD -i "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-testhost-$NAME"
  iptables -A FORWARD -o "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-testhost-$NAME"
  # One SSH key for the admin user and root on the board.
  rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N "" -C "edgectl-testhost" -f "$dir/id_ed25519"
  install -m 600 "$dir/id_ed25519.pub" "$dir/root/root/.ssh/authorized_keys"
  local home=$dir/root/home/$ADMIN_USER
  install -m 600 -o "$(stat -c %u "$home")" -g "$(stat -c %g "$home")" "$dir/id_ed25519.pub" \
    "$home/.ssh/authorized_keys"
  echo "ListenAddress $BOARD_ADDR" >>"$dir/root/etc/ssh/sshd_config.d/edgectl-testhost.conf"
  cat >"$dir/env" <<ENV
BOARD_NAME=$NAME
BOARD_ADDR=$BOARD_ADDR
HOST_ADDR=$HOST_ADDR
SSH_KEY=$dir/id_ed25519
ADMIN_USER=$ADMIN_USER
BOARD_ROOT=$dir/root
ENV
  cmd_boot "$dir"
}

cmd_boot() {
  local dir=${1:?usage: testhost.sh boot DIR}
  dir=$(cd "$dir" && pwd)
  [ -d "$dir/root" ] && [ -e "/run/netns/$NAME" ] || die "no unpacked root or netns: run up first"
  # PID 1 here is not systemd and the cgroups are hybrid (v1 + v2 at .../unified):
  # nspawn cannot mirror that hybrid layout (no net_cls link), so the board gets a
  # private cgroup2 (unified) hierarchy: SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1.
  log "booting $NAME with systemd-nspawn"
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-1} \
  SYSTEMD_NSPAWN_USE_CGNS=${SYSTEMD_NSPAWN_USE_CGNS:-1} \
    setsid systemd-nspawn --quiet --boot --register=no --keep-unit \
      --machine="$NAME" --directory="$dir/root" \
      --network-namespace-path="/run/netns/$NAME" \
      --capability=all --console=passive \
      </dev/null >>"$dir/nspawn.log" 2>&1 &
  echo $! >"$dir/nspawn.pid"
  local i
  for i in $(seq 1 120); do
    if ! kill -0 "$(cat "$dir/nspawn.pid")" 2>/dev/null; then
      tail -n 40 "$dir/nspawn.log" >&2
      die "systemd-nspawn exited while booting (log: $dir/nspawn.log)"
    fi
    if ssh -q -i "$dir/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 "root@$BOARD_ADDR" true 2>/dev/null; then
      log "board up: root@$BOARD_ADDR (key $dir/id_ed25519) after ${i}s"
      return 0
    fi
    sleep 1
  done
  tail -n 40 "$dir/nspawn.log" >&2
  die "ssh on $BOARD_ADDR did not answer within 120 s"
}

cmd_kill() {
  local dir=${1:?usage: testhost.sh kill DIR}
  local pid
  pid=$(cat "$dir/nspawn.pid")
  # The board's PID 1 is nspawn's child and outlives nspawn: SIGKILL it first (every
  # process of the board's PID namespace dies with it), then nspawn. Already gone
  # (killed by the caller at its chosen moment): only waited for.
  local init
  init=$(pgrep -P "$pid" | head -n1 || true)
  [ -z "$init" ] || kill -KILL "$init" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { [ -n "$init" ] && kill -0 "$init" 2>/dev/null; } || break
    sleep 0.1
  done
  ! kill -0 "$pid" 2>/dev/null || die "systemd-nspawn $pid survived SIGKILL"
  [ -z "$init" ] || ! kill -0 "$init" 2>/dev/null || die "the board's PID 1 ($init) survived SIGKILL"
  rm -f "$dir/nspawn.pid"
}

cmd_down() {
  local dir=${1:?usage: testhost.sh down DIR}
  local pid
  if [ -f "$dir/nspawn.pid" ]; then
    pid=$(cat "$dir/nspawn.pid")
    if kill -0 "$pid" 2>/dev/null; then
      # SIGRTMIN+4 to systemd-nspawn's PID 1 = poweroff; nspawn forwards SIGTERM as that.
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/nspawn.pid"
  fi
  while iptables -t nat -D POSTROUTING -s "$NET.0/24" ! -o "$VETH_HOST" -j MASQUERADE -m comment --comment "edgectl-testhost-$NAME" 2>/dev/null; do :; done
  while iptables -D FORWARD -i "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-testhost-$NAME" 2>/dev/null; do :; done
  while iptables -D FORWARD -o "$VETH_HOST" -j ACCEPT -m comment --comment "edgectl-testhost-$NAME" 2>/dev/null; do :; done
  ip link del "$VETH_HOST" 2>/dev/null || true
  ip netns del "$NAME" 2>/dev/null || true
  if [ -d "$dir/root" ]; then
    # Nothing of the board may stay mounted before its files go.
    grep -F " $dir/root" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$dir/root"
  fi
}

case "${1:-}" in
  build) cmd_build ;;
  up) shift; cmd_up "$@" ;;
  boot) shift; cmd_boot "$@" ;;
  kill) shift; cmd_kill "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) echo "usage: $0 build | up DIR | boot DIR | kill DIR | down DIR" >&2; exit 2 ;;
esac
