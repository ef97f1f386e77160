#!/bin/sh
# Make sure the Debian/Ubuntu packages named on the command line are installed
# (the Makefile's lists: `make system-packages`, `make board-packages`).
#
# Nothing missing: silent. As root: one `apt-get update` when the package lists are
# empty or older than an hour, then one `apt-get install -y` of what is missing.
# As another user: one line naming the missing packages and the command, exit 1,
# so `make test` stops before it installs or runs anything.
set -eu

missing=""
for pkg in "$@"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  case "$status" in
    ii*) ;;
    *) missing="$missing $pkg" ;;
  esac
done
missing=${missing# }
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  echo "error: the tests need these Debian packages, and this machine has no apt: $missing" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: missing Debian packages: $missing; install them with: sudo apt-get update && sudo apt-get install -y $missing" >&2
  exit 1
fi

log=${TMPDIR:-/tmp}/edgectl-apt.log
export DEBIAN_FRONTEND=noninteractive
# Lists older than an hour may name versions the mirror no longer has (as the deploy
# role's cache_valid_time); empty lists (a fresh image) know no package at all.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -n1)" ]; then
  echo "apt-get update (the package lists are empty or older than an hour)"
  if ! apt-get update -q >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: apt-get update failed (log: $log)" >&2
    exit 1
  fi
fi
echo "apt-get install -y $missing"
if ! apt-get install -y -q $missing >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "error: apt-get install -y $missing failed (log: $log)" >&2
  exit 1
fi
