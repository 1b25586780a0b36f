#!/bin/sh
# Installs the Debian packages spotrain needs to build and test, when they
# are missing and we are root; otherwise says which apt-get line to run.
# Usage: sh tests/deps.sh [build|test]   (test adds PyTorch, clang, shellcheck)
set -u
want="build-essential libopenmpi-dev openmpi-bin libzstd-dev libinih-dev libjson-c-dev libxxhash-dev libopenblas-dev python3"
if [ "${1:-build}" = test ]; then
    want="$want python3-torch python3-numpy clang shellcheck procps"
fi
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "spotrain: missing Debian packages:$missing; run: sudo apt-get install$missing" >&2
    exit 69
fi
echo "spotrain: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
