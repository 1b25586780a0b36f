#!/bin/sh
# Measured equals planned: each rank's peak resident memory (VmHWM, via
# /usr/bin/time %M) of a 2-step run that checkpoints, against --dry-run's
# per-process total, within 10%, at 1, 2 and 4 ranks, ZeRO 1/2/3, recompute
# none and layers. The plan must hold the whole process (binary, libraries,
# MPI, threads, the checkpoint writer's slots); nothing is subtracted. Each
# rank against its own plan: --dry-run's per-process total is the largest
# rank's, and rank 0, which holds no chain slots, gets its own line when it
# differs. Rank 0 used to run 7-11% under the largest rank's plan: the
# slots (1-2% here) and, mostly, the checkpoint writer's output slots,
# whose pages were touched only as far as each chunk compressed (rank 0's
# range, the embedding rows no batch reached, is zeros); the writer now
# touches them at open, as the plan counts them. The shape is small enough
# for seconds a run and big enough that every category of the plan but the
# exchange buffers is over 10% of the total in some row: a category the
# plan dropped would fail there (checked below, from the same figures).
# module: model backend
# Option strings like $F are word-split on purpose.
# shellcheck disable=SC2086
. tests/cli/lib.sh
S=$SPOTRAIN
# A sanitizer build's shadow memory and quarantine are not the process
# the plan describes.
case "$BUILD" in */san*)
    echo "SKIP memfit: a sanitizer build's resident memory is not the plan's"
    t_end
    exit $? ;;
esac
if [ ! -x /usr/bin/time ] || ! command -v mpirun >/dev/null 2>&1 || ! "$S" --version | grep -q "mpi: yes"; then
    echo "SKIP memfit: needs /usr/bin/time and mpirun"
    t_end
    exit $?
fi
cd "$T_TMP" || exit 1
F="--set model.dim=256 --set model.n_layers=4 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.ffn_dim=704
   --set model.vocab_size=4096 --set model.seq_len=128 --set train.backend=cpu --set train.threads=1
   --set train.micro_batch=3 --set train.max_steps=2 --set train.val_every=0 --set checkpoint.interval_steps=0
   --set checkpoint.threads=2 --quiet"
# The second step matters: its exchange buffers come from a heap that the
# first step's freed ones grew.
: >rows
for W in 1 2 4; do
    for z in 1 2 3; do
        for r in none layers; do
            A="$F --set train.global_batch=$((3 * W)) --set train.zero=$z --set train.recompute=$r"
            "$S" train /dev/null $A --dry-run --world $W >plan.txt 2>&1
            # Rank 0's own plan, below the largest rank's, from 2 ranks on.
            # shellcheck disable=SC2016
            [ "$W" -gt 1 ] && t_exit "world $W, zero $z, recompute $r: rank 0's plan printed, under the largest" 0 "" \
                awk '/^  per-process total:/ { t = $3 } /^  rank 0 per-process total:/ { z = $5 }
                     END { exit !(z > 0 && z < t) }' plan.txt
            launch=""
            [ "$W" -gt 1 ] && launch="mpirun -np $W --oversubscribe"
            # shellcheck disable=SC2016
            $launch sh -c '/usr/bin/time -o "$0.${OMPI_COMM_WORLD_RANK:-0}" -f "%M" "$@"' "rss-$W-$z-$r" \
                "$S" train /dev/null $A --set train.run_dir="run-$W-$z-$r" >/dev/null 2>&1
            t_exit "world $W, zero $z, recompute $r: trained and checkpointed" 0 "" \
                test -d "run-$W-$z-$r/ckpt/step-00000002"
            for f in "rss-$W-$z-$r".*; do
                # One row: W z r rank measured-bytes then the plan's categories (GiB) and total (bytes).
                awk -v k="$(tail -n 1 "$f" 2>/dev/null)" -v row="$W $z $r ${f##*.}" -v rank="${f##*.}" '
                    /^  (parameters|gradients|adam|checkpoint|activations|process)/ { c[++n] = $(NF - 1) }
                    /^  gradient exchange/ { c[++n] = $(NF - 1) }
                    /^  per-process total:/ { tot = $3 }
                    /^  rank 0 per-process total:/ { tot0 = $5 }
                    END { if (rank == 0 && tot0 > 0) tot = tot0; printf "%s %d %d", row, k * 1024, tot; for (i = 1; i <= n; i++) printf " %s", c[i]; print "" }
                ' plan.txt >>rows
            done
        done
    done
done
# Every rank of every row within 10% of its plan.
# shellcheck disable=SC2034
while read -r W z r rank m p rest; do
    fig=$(awk -v m="$m" -v p="$p" 'BEGIN { if (p > 0) printf "VmHWM %.1f MiB, plan %.1f MiB: %+.1f%%",
                                                   m / 1048576, p / 1048576, 100 * (m - p) / p }')
    t_exit "world $W, zero $z, recompute $r, rank $rank: $fig" 0 "" awk -v m="$m" -v p="$p" '
        BEGIN { d = p > 0 ? (m - p) / p : 1; exit !(m > 0 && d >= -0.10 && d <= 0.10) }'
done <rows
# Rank 0 held like the others: its deviation from its own plan within 3
# points of rank 1's in the same row (before the writer touched its slots
# at open and rank 0 had its own plan, 4-9 points apart).
# shellcheck disable=SC2016
t_exit "rank 0 runs as close to its plan as rank 1 (within 3 points)" 0 "" awk '
    { d[$1 " " $2 " " $3, $4] = ($5 - $6) / $6; k[$1 " " $2 " " $3] = $1 }
    END { for (r in k) if (k[r] > 1) { x = d[r, 0] - d[r, 1]; if (x < -0.03 || x > 0.03) {
              printf "%s: rank 0 %+.1f%%, rank 1 %+.1f%%\n", r, 100 * d[r, 0], 100 * d[r, 1]; bad = 1 } }
          exit bad }' rows
# The test can fail: for each of the plan's categories (params, grads,
# adam, snapshot, activations, writer I/O, process), some row where the
# plan without it is more than 10% under the measured peak. The exchange
# buffers (5th) are the chain's 3 slots of at most an eighth of a part,
# under 10% of any process: test_memplan.c holds them to the byte instead.
# shellcheck disable=SC2016
t_exit "every category matters in some row (dropping it fails the test)" 0 "" awk '
    { m = $5; p = $6; for (i = 7; i <= NF; i++) if (m / (p - $i * 1073741824) > 1.10) hit[i - 6] = 1; k = NF - 6 }
    END { for (i = 1; i <= k; i++) if (i != 5 && !hit[i]) { print "category " i " is never over 10%"; bad = 1 }
          if (k < 8) { print "only " k " categories read"; bad = 1 }
          exit bad }' rows
t_end
