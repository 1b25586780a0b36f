#!/bin/sh
# Installs the Debian packages spotrain needs to build and test, when they
# are missing and we are root; otherwise says which apt-get line to run.
# Usage: sh tests/deps.sh [build|test]   (test adds PyTorch, clang, shellcheck)
set -u
want="build-essential libopenmpi-dev openmpi-bin libzstd-dev libinih-dev libjson-c-dev libxxhash-dev libopenblas-dev libcurl4-openssl-dev python3"
if [ "${1:-build}" = test ]; then
    want="$want python3-torch python3-numpy clang shellcheck procps python3-venv"
fi
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# build/venv: the PyPI packages in tests/requirements.txt (moto's S3 server
# and boto3 for the S3 tests), created when missing or when the list is newer
# than the venv. Tests that need it print SKIP without it.
venv() {
    [ "${1:-build}" = test ] || return 0
    [ -x build/venv/bin/python ] && [ -n "$(find build/venv/.stamp -newer tests/requirements.txt 2>/dev/null)" ] &&
        return 0
    echo "spotrain: installing tests/requirements.txt into build/venv" >&2
    { [ -x build/venv/bin/python ] || /usr/bin/python3 -m venv build/venv; } &&
        build/venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt &&
        touch build/venv/.stamp ||
        echo "spotrain: could not create build/venv from PyPI; the S3 tests will be skipped" >&2
}
if [ -z "$missing" ]; then
    venv "${1:-build}"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "spotrain: missing Debian packages:$missing; run: sudo apt-get install$missing" >&2
    exit 69
fi
echo "spotrain: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
venv "${1:-build}"
