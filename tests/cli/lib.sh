# Shared helpers for the CLI test scripts: a scratch directory, expectations
# on exit codes and output, and the closing "N passed, N failed" line.
BUILD=${BUILD:-build}
SPOTRAIN=${SPOTRAIN:-$PWD/$BUILD/spotrain}
T_PASS=0
T_FAIL=0
T_TMP=$(mktemp -d /tmp/spotrain-test.XXXXXX)
trap 't_cleanup' EXIT
t_cleanup() { rm -rf "$T_TMP"; }

t_ok() { T_PASS=$((T_PASS + 1)); echo "ok   $1"; }
t_bad() { T_FAIL=$((T_FAIL + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && echo "    $2"; return 0; }

# t_exit NAME CODE PATTERN CMD...: CMD must exit CODE and stderr+stdout must
# match the extended regex PATTERN (empty: any).
t_exit() {
    name=$1 want=$2 pat=$3
    shift 3
    out=$("$@" 2>&1)
    got=$?
    if [ "$got" -ne "$want" ]; then
        t_bad "$name" "exit $got, wanted $want; output: $(echo "$out" | tail -n 3)"
    elif [ -n "$pat" ] && ! echo "$out" | grep -Eq -- "$pat"; then
        t_bad "$name" "output does not match /$pat/: $(echo "$out" | tail -n 3)"
    else
        t_ok "$name"
    fi
}

t_end() {
    [ -n "${PROXY:-}" ] && t_s3_signatures
    echo "$T_PASS passed, $T_FAIL failed"
    [ "$T_FAIL" -eq 0 ]
}

# t_need_mpi WHAT: ends the script with a SKIP line (and the closing
# count) unless mpirun is there and spotrain was built with MPI.
t_need_mpi() {
    command -v mpirun >/dev/null 2>&1 && "$SPOTRAIN" --version | grep -q "mpi: yes" && return 0
    echo "SKIP $1: no mpirun or built with MPI=0"
    t_end
    exit $?
}

# t_s3_signatures: every request that reached the S3 test server (both of
# the proxy's ports) carried a SigV4 signature that verifies, recomputed by
# botocore from the request as sent (moto checks none; a real server answers
# 403).
t_s3_signatures() {
    _bad=$("$PY" -c "import urllib.request as u; print(u.urlopen('$PROXY/_badsig').read().decode(), end='')" 2>&1)
    if [ -z "$_bad" ]; then t_ok "every S3 request's SigV4 signature verifies (botocore, as sent)"
    else t_bad "every S3 request's SigV4 signature verifies (botocore, as sent)" "$(echo "$_bad" | wc -l) did not; $(echo "$_bad" | head -n 3)"; fi
}

# cpu_gemm = auto's choice fixed to OpenBLAS: tests compare bits between
# runs and with tests/cli/golden.txt, which a timing must not decide
# (cli_cpu_gemm.sh unsets it to test auto itself).
export SPOTRAIN_CPU_GEMM=openblas

# mpirun as root in containers and CI.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# t_json_field FILE EVENT FIELD: values of FIELD in EVENT records, one a line.
t_events() {
    /usr/bin/python3 - "$@" <<'PY'
import json, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # a reader that stops early (grep -q) is not an error
path, event, field = sys.argv[1:4]
for line in open(path):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("event") == event and field in r:
        print(r[field])
PY
}

# t_digest CKPT_DIR: the checkpoint's params, adam_m and adam_v digests on
# one line (empty when it cannot be inspected).
t_digest() {
    "$SPOTRAIN" ckpt inspect --json "$1" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d["digest"]["params"], d["digest"]["adam_m"], d["digest"]["adam_v"])'
}

# t_same_run NAME DIR_A DIR_B STEP: the two runs' checkpoints of STEP have
# the same digests and their ledgers the same logged losses.
t_same_run() {
    _a=$(t_digest "$2/ckpt/$(printf 'step-%08d' "$4")" 2>/dev/null)
    _b=$(t_digest "$3/ckpt/$(printf 'step-%08d' "$4")" 2>/dev/null)
    _la=$(t_events "$2/events.jsonl" step loss | tr '\n' ' ')
    _lb=$(t_events "$3/events.jsonl" step loss | tr '\n' ' ')
    if [ -n "$_a" ] && [ "$_a" = "$_b" ] && [ -n "$_la" ] && [ "$_la" = "$_lb" ]; then
        t_ok "$1 (digests $_a)"
    else
        t_bad "$1" "digests '$_a' vs '$_b', losses '$_la' vs '$_lb'"
    fi
}

# t_steps RUN_DIR: how many "step" records the run's ledger holds (re-run
# steps count again, so the number only grows).
# t_byte_tokenizer FILE: a byte-level BPE tokenizer.json with no merges (the
# 256 GPT-2 byte symbols as ids 0-255), from the stdlib alone.
t_byte_tokenizer() {
    /usr/bin/python3 - "$1" <<'PY'
import json, sys
m, n = {}, 0
for b in range(256):
    keep = 33 <= b <= 126 or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF
    m[b] = chr(b) if keep else chr(256 + n)
    n += 0 if keep else 1
vocab = {m[b]: b for b in range(256)}
j = {"added_tokens": [], "normalizer": None, "decoder": {"type": "ByteLevel"},
     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
     "model": {"type": "BPE", "vocab": vocab, "merges": []}}
json.dump(j, open(sys.argv[1], "w"))
PY
}

t_steps() { cat "$1/events.jsonl" 2>/dev/null | grep -c '"event":"step"'; }

# t_wait_steps RUN_DIR N PID: wait until the ledger holds N step records, or
# PID has exited, or 60 s have passed. Signals sent after it land mid-run on
# any machine speed, which a fixed sleep cannot promise.
t_wait_steps() {
    _w=0
    while [ "$(t_steps "$1")" -lt "$2" ] && kill -0 "$3" 2>/dev/null && [ $_w -lt 3000 ]; do
        sleep 0.02
        _w=$((_w + 1))
    done
}

# t_s3_servers NAME: moto's S3 server from $VENV (build/venv) and the fault
# proxy (tests/cli/s3_fault_proxy.py) in front of it, both on 127.0.0.1, stopped
# by t_cleanup. Sets PY, MOTO_PORT, MOTO and PROXY; MOTO_PORT/MOTO is the
# proxy's fault-free port, so that direct traffic has its signatures checked
# too (t_end fails on any that does not verify); unsets every proxy and
# AWS setting from the environment and exports test-only keys, so nothing
# leaves this machine. Without moto or boto3 in the venv: SKIP and exit 0.
t_s3_servers() {
    VENV=${VENV:-build/venv}
    if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c 'import boto3' 2>/dev/null; then
        echo "SKIP $1: $VENV lacks moto_server or boto3 (sh tests/deps.sh test creates it)"
        t_end
        exit 0
    fi
    PY=$PWD/$VENV/bin/python
    _real=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$_real" >"$T_TMP/moto.log" 2>&1 &
    MOTO_PID=$!
    "$PY" "$PWD/tests/cli/s3_fault_proxy.py" --upstream "$_real" --port-file "$T_TMP/proxy.port" \
        --clean-port-file "$T_TMP/clean.port" &
    PROXY_PID=$!
    t_cleanup() { kill "$MOTO_PID" "$PROXY_PID" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T_TMP"; }
    _i=0
    until [ -s "$T_TMP/proxy.port" ] && "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$_real/')" 2>/dev/null; do
        _i=$((_i + 1)); [ $_i -gt 100 ] && break; sleep 0.2
    done
    MOTO_PORT=$(cat "$T_TMP/clean.port")
    MOTO=http://127.0.0.1:$MOTO_PORT
    PROXY=http://127.0.0.1:$(cat "$T_TMP/proxy.port")
    unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
    export no_proxy=127.0.0.1 NO_PROXY=127.0.0.1
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
}
