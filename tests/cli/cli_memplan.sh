#!/bin/sh
# The memory model against a real process: two training steps of the small
# preset (32M parameters) on the CPU backend, its peak RSS (VmHWM, via
# /usr/bin/time %M) within 10% of --dry-run's per-process total, which
# holds the whole process (binary, libraries, threads, the checkpoint
# writer's buffers). cli_memfit.sh holds every rank of 1, 2 and 4 to it;
# recompute = auto's choice against SPOTRAIN_TEST_MEM_AVAILABLE is here.
# module: model cli
. tests/cli/lib.sh

S=$SPOTRAIN

# --- train.recompute = auto: the plan against the memory available -------
# SPOTRAIN_TEST_MEM_AVAILABLE stands in for MemAvailable: one byte under the
# plan with none picks layers (and the plan with layers fits), the plan
# itself keeps none.
A="--set model.preset=tiny --set train.backend=cpu --set train.threads=1 --set train.global_batch=1
   --set train.micro_batch=1 --set train.max_steps=1 --set train.val_every=0 --set checkpoint.interval_steps=0"
# shellcheck disable=SC2086
none=$("$S" train /dev/null $A --dry-run 2>/dev/null | sed -n 's/^  per-process total: \([0-9]*\) bytes/\1/p')
# shellcheck disable=SC2086
t_exit "auto keeps none when the plan fits" 0 "recompute auto: none; plan .* GiB headroom$" \
    env SPOTRAIN_TEST_MEM_AVAILABLE="$none" "$S" train /dev/null $A --set train.recompute=auto \
    --set train.run_dir="$T_TMP/auto-none"
# shellcheck disable=SC2086
t_exit "auto picks layers one byte short" 0 "recompute auto: layers; plan .* GiB headroom$" \
    env SPOTRAIN_TEST_MEM_AVAILABLE="$((none - 1))" "$S" train /dev/null $A --set train.recompute=auto \
    --set train.run_dir="$T_TMP/auto-layers"
# shellcheck disable=SC2086
t_exit "auto that cannot fit is refused on the plan's line" 78 \
    "memory plan needs .* GiB per process [(]ZeRO stage 1, recompute layers, 1 rank[)].*not starting" \
    env SPOTRAIN_TEST_MEM_AVAILABLE=1000 "$S" train /dev/null $A --set train.recompute=auto \
    --set train.run_dir="$T_TMP/auto-small"
t_exit "a refused start writes nothing" 0 "" test ! -e "$T_TMP/auto-small"
# shellcheck disable=SC2086
t_exit "dry-run shows auto's choice" 0 "recompute auto: layers on this machine" \
    env SPOTRAIN_TEST_MEM_AVAILABLE="$((none - 1))" "$S" train /dev/null $A --set train.recompute=auto --dry-run
# shellcheck disable=SC2086
t_exit "auto on backend cuda plans none where the GPU holds it" 0 "recompute auto: none against a 80 GiB GPU" \
    "$S" train /dev/null $A --set train.recompute=auto --set train.backend=cuda --set cost.gpu=h100 --dry-run
# shellcheck disable=SC2086
t_exit "auto on backend cuda takes layers on a GPU too small for none" 0 \
    "recompute auto: layers against a 1 GiB GPU.*" \
    "$S" train /dev/null --set model.preset=deepseek-7b --set train.recompute=auto --set train.backend=cuda \
    --set cost.gpu_memory_gib=1 --dry-run
# shellcheck disable=SC2016
t_exit "auto: the same losses as layers and none" 0 "" sh -c \
    'grep -h "\"loss\"" "$1"/auto-*/events.jsonl | sed "s/.*\"loss\": *\([^,]*\).*/\1/" | sort -u | wc -l | grep -qx 1' \
    sh "$T_TMP"

# --- long context: the CPU plan is linear in seq_len ----------------------
# The tiled attention keeps a log-sum-exp per row and fixed tiles per
# thread: doubling T doubles the activations (no T^2 term), equal steps in
# T are equal steps in bytes, and the attention scratch line does not move.
L="--set model.preset=tiny --set train.backend=cpu --set train.threads=2 --set train.global_batch=1
   --set train.micro_batch=1"
for t in 16384 32768 49152; do
    # shellcheck disable=SC2086
    "$S" train /dev/null $L --set model.seq_len=$t --dry-run >"$T_TMP/plan-$t" 2>&1
done
t_exit "dry-run shows the attention scratch at T=32768" 0 "" \
    grep -q "^  attention scratch (tiles) .* GiB" "$T_TMP/plan-32768"
t_exit "attention scratch: the same at T=16384 and 32768" 0 "" sh -c \
    'test "$(grep "^  (attention tiled" "$1")" = "$(grep "^  (attention tiled" "$2")" && grep -q "^  (attention tiled 64x64: 2 threads" "$1"' \
    sh "$T_TMP/plan-16384" "$T_TMP/plan-32768"
t_exit "T 16384 -> 32768 doubles the activations; equal steps in T, equal steps in bytes" 0 "" awk '
    /^  activations \(micro_batch 1\)/ { a[FILENAME] = $(NF - 1) }
    /^  per-process total:/ { b[FILENAME] = $3 }
    END {
        x = ARGV[1]; y = ARGV[2]; z = ARGV[3]
        r = a[y] / a[x]
        printf "activations %s -> %s GiB (x%.3f); totals %s %s %s\n", a[x], a[y], r, b[x], b[y], b[z]
        exit !(a[x] > 0 && r > 1.95 && r < 2.05 && b[x] + b[z] == 2 * b[y])
    }' "$T_TMP/plan-16384" "$T_TMP/plan-32768" "$T_TMP/plan-49152"

case "$BUILD" in */san*) SAN=1 ;; *) SAN=0 ;; esac
if [ ! -x /usr/bin/time ] || [ "$SAN" = 1 ]; then
    echo "SKIP memplan VmHWM: no /usr/bin/time, or a sanitizer build (its resident memory is not the plan's)"
    t_end
    exit $?
fi
F="--set model.preset=small --set train.backend=cpu --set train.threads=1 --set train.global_batch=1
   --set train.micro_batch=1 --set train.max_steps=2 --set train.val_every=0 --set checkpoint.interval_steps=0
   --set checkpoint.threads=1 --quiet"
# shellcheck disable=SC2086
plan=$("$S" train /dev/null $F --dry-run 2>/dev/null | sed -n 's/^  per-process total: \([0-9]*\) bytes/\1/p')
# shellcheck disable=SC2086
/usr/bin/time -o "$T_TMP/rss" -f "%M" "$S" train /dev/null $F --set train.run_dir="$T_TMP/run" >/dev/null 2>&1
t_exit "the steps ran and wrote their checkpoint" 0 "" test -d "$T_TMP/run/ckpt/step-00000002"
fig=$(awk -v p="$plan" -v k="$(tail -n 1 "$T_TMP/rss")" 'BEGIN { if (p > 0)
    printf "plan %.1f MiB, VmHWM %.1f MiB: %+.1f%%", p / 1048576, k / 1024, 100 * (k * 1024 - p) / p }')
t_exit "VmHWM is the plan within 10% ($fig)" 0 "" awk -v p="$plan" -v k="$(tail -n 1 "$T_TMP/rss")" 'BEGIN {
    d = p > 0 ? (k * 1024 - p) / p : 1
    exit !(k > 0 && d >= -0.10 && d <= 0.10)
}'
# --- backend cuda, zero 2: the gradient buckets [comm] overlap holds -------
# Two (the one the backward fills, the one the comm stream reduces) under
# overlap over 2+ ranks; one with overlap = false or on one rank, the
# per-GPU total one bucket less.
gpu() {
    "$S" train /dev/null --set train.backend=cuda --set train.zero=2 --dry-run "$@" 2>/dev/null |
        sed -n '/^per-GPU memory/,$p'
}
gpu --world 2 >"$T_TMP/g-on"
gpu --world 2 --set comm.overlap=false >"$T_TMP/g-off"
gpu --world 1 >"$T_TMP/g-one"
t_exit "cuda zero 2, overlap, 2 ranks: range, a bucket and a layer" 0 "" grep -qF "gradients (range+bucket+layer)" "$T_TMP/g-on"
t_exit "cuda zero 2, overlap = false: range + 1 bucket" 0 "" grep -qF "gradients (range + 1 bucket)" "$T_TMP/g-off"
t_exit "cuda zero 2, one rank: range + 1 bucket" 0 "" grep -qF "gradients (range + 1 bucket)" "$T_TMP/g-one"
on=$(sed -n 's/.*per-GPU total: \([0-9]*\) bytes.*/\1/p' "$T_TMP/g-on")
off=$(sed -n 's/.*per-GPU total: \([0-9]*\) bytes.*/\1/p' "$T_TMP/g-off")
t_exit "cuda zero 2: overlap = false plans less per GPU ($off < $on)" 0 "" test "${off:-0}" -gt 0 -a "${off:-0}" -lt "${on:-0}"
t_end
