#!/usr/bin/env bash
# Ensures the system programs grbd's tests need. Installs the Debian packages
# when running as root; otherwise names what is missing and fails.
set -euo pipefail

# program -> Debian package
declare -A need=(
  [fio]=fio [nbdinfo]=libnbd-bin [nbdsh]=python3-libnbd [nbdfuse]=libnbd-bin [nbdkit]=nbdkit
  [fusermount3]=fuse3 [qemu-nbd]=qemu-utils [mkfs.ext4]=e2fsprogs [e2fsck]=e2fsprogs
  [losetup]=mount [nft]=nftables
)
missing=()
for prog in "${!need[@]}"; do
  command -v "$prog" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 || missing+=("${need[$prog]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "grbd tests need these Debian packages: $pkgs" >&2
  echo "install them with: sudo apt-get install -y $pkgs" >&2
  exit 1
fi
echo "installing test dependencies: $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >&2
