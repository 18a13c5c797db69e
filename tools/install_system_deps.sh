#!/usr/bin/env bash
# Installs the Debian packages pulsewire needs (e.g. mosquitto) when they are missing.
# As root it uses apt-get; otherwise it prints the command to run and carries on.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "warning: missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  echo "         (tests that need them will say so and fail)" >&2
  exit 0
fi
echo "==> apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
