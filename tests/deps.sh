#!/bin/sh
# Installs the Debian packages spotrain needs to build and test, when they
# are missing and we are root; otherwise says which apt-get line to run.
# `test` also makes build/venv, a Python virtual environment with the PyPI
# oracles of tests/requirements.txt (tokenizers, safetensors); tests that need
# it print SKIP when it is missing.
# Usage: sh tests/deps.sh [build|test]   (test adds PyTorch, clang, shellcheck)
set -u
want="build-essential libopenmpi-dev openmpi-bin libzstd-dev libinih-dev libjson-c-dev libxxhash-dev libopenblas-dev python3"
if [ "${1:-build}" = test ]; then
    want="$want python3-torch python3-numpy python3-venv clang shellcheck procps"
fi
deps_venv() {
    [ "${1:-build}" = test ] || return 0
    venv=build/venv
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import tokenizers, safetensors" 2>/dev/null; then
        return 0
    fi
    echo "spotrain: making $venv with tests/requirements.txt (PyPI)" >&2
    mkdir -p build
    if ! { /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install -q -r tests/requirements.txt; } >&2; then
        echo "spotrain: could not fill $venv from PyPI; tests that need it will SKIP" >&2
    fi
    return 0
}
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    deps_venv "${1:-build}"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "spotrain: missing Debian packages:$missing; run: sudo apt-get install$missing" >&2
    exit 69
fi
echo "spotrain: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null || exit $?
deps_venv "${1:-build}"
