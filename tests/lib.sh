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

t_end() { echo "$T_PASS passed, $T_FAIL failed"; [ "$T_FAIL" -eq 0 ]; }

# mpirun as root in containers and CI.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# t_json_field FILE EVENT FIELD: values of FIELD in EVENT records, one a line.
t_events() {
    /usr/bin/python3 - "$@" <<'PY'
import json, sys
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

# t_steps RUN_DIR: how many "step" records the run's ledger holds (re-run
# steps count again, so the number only grows).
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
