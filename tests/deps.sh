#!/bin/sh
# Installs the Debian packages spotrain needs to build and test, when they
# are missing and we are root; otherwise says which apt-get line to run.
# `test` also makes build/venv, a Python virtual environment with the PyPI
# oracles of tests/requirements.txt (tokenizers, safetensors); tests that need
# it print SKIP when it is missing.
# Usage: sh tests/deps.sh [build|test]   (test adds PyTorch, clang, shellcheck, promtool, xz, groff,
#                                         and oneDNN and BLIS, the optional train.cpu_gemm libraries,
#                                         opened at run time: their tests SKIP where they are missing)
#        sh tests/deps.sh check          (make runs this: the compiler finds every
#                                         header, or one line names the packages)
set -u
want="build-essential libopenmpi-dev openmpi-bin libzstd-dev zlib1g-dev libinih-dev libjson-c-dev libxxhash-dev libopenblas-dev libcurl4-openssl-dev python3"
if [ "${1:-build}" = check ]; then
    # Headers, not dpkg: this also holds on a system that is not Debian.
    missing=""
    for hp in zstd.h:libzstd-dev zlib.h:zlib1g-dev ini.h:libinih-dev json-c/json.h:libjson-c-dev xxhash.h:libxxhash-dev \
        cblas.h:libopenblas-dev curl/curl.h:libcurl4-openssl-dev; do
        printf '#include <%s>\n' "${hp%%:*}" | ${CC:-cc} -E -x c - >/dev/null 2>&1 || missing="$missing ${hp#*:}"
    done
    [ -z "$missing" ] && exit 0
    echo "spotrain: cannot build: missing headers of the Debian packages$missing; install them with: sudo apt-get install$missing (or as root: sh tests/deps.sh)" >&2
    exit 69
fi
if [ "${1:-build}" = test ]; then
    want="$want python3-torch python3-numpy python3-venv clang shellcheck procps prometheus xz-utils groff-base libdnnl2 libblis4-serial"
fi
deps_venv() {
    [ "${1:-build}" = test ] || return 0
    venv=build/venv
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import tokenizers, safetensors, moto, boto3, unicodedata2" 2>/dev/null; then
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
