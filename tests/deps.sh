#!/bin/sh
# Installs the Debian packages spotrain needs to build and test, when they
# are missing and we are root; otherwise says which apt-get line to run.
# Usage: sh tests/deps.sh [build|test]   (test adds PyTorch, clang, shellcheck, promtool)
#        sh tests/deps.sh check          (make runs this: the compiler finds every
#                                         header, or one line names the packages)
set -u
want="build-essential libopenmpi-dev openmpi-bin libzstd-dev libinih-dev libjson-c-dev libxxhash-dev libopenblas-dev python3"
if [ "${1:-build}" = check ]; then
    # Headers, not dpkg: this also holds on a system that is not Debian.
    missing=""
    for hp in zstd.h:libzstd-dev ini.h:libinih-dev json-c/json.h:libjson-c-dev xxhash.h:libxxhash-dev \
        cblas.h:libopenblas-dev; do
        printf '#include <%s>\n' "${hp%%:*}" | ${CC:-cc} -E -x c - >/dev/null 2>&1 || missing="$missing ${hp#*:}"
    done
    [ -z "$missing" ] && exit 0
    echo "spotrain: cannot build: missing headers of the Debian packages$missing; install them with: sudo apt-get install$missing (or as root: sh tests/deps.sh)" >&2
    exit 69
fi
if [ "${1:-build}" = test ]; then
    want="$want python3-torch python3-numpy clang shellcheck procps prometheus"
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
