#!/bin/sh
# CLI tests of `cost estimate`, `cost report` and `bid`: the published
# example's exact figures, the cron-friendly report (torn last line,
# --csv --header), bid's recommendation and alert, and bad inputs.
# module: money cli
. tests/cli/lib.sh

S=$SPOTRAIN
EX=examples/spot-8xa100.ini

# t_has NAME STRING FILE: FILE contains STRING verbatim.
t_has() {
    if grep -qF -- "$2" "$3"; then t_ok "$1"; else t_bad "$1" "missing '$2' in: $(head -c 600 "$3")"; fi
}

# --- cost estimate: the published example, to the cent -------------------
# zero and recompute default to auto; the stage-1 figures below pin them.
Z1="--set train.zero=1 --set train.recompute=none"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $Z1 >"$T_TMP/est.txt" 2>&1
t_exit "estimate exits 0" 0 "" "$S" cost estimate "$EX"
for s in "node                      48.00 -> 19.20" "interconnect              12.00 -> 4.80" \
    "storage                    6.00 -> 6.00" "66.00 -> 30.00" "saving 54.5%" "5120 -> 5420" \
    "337,920 -> 162,600" "saving 51.9%" "time +5.9%" \
    "memory per GPU (backend cuda, bf16, micro_batch 16; ZeRO stage 1: Adam m and v and the fp32 master sharded over 8 GPUs" \
    "does NOT fit in 80 GiB per GPU: more ranks shrink only Adam m and v"; do
    t_has "estimate prints '$s'" "$s" "$T_TMP/est.txt"
done
"$S" cost estimate "$EX" --json >"$T_TMP/est.json"
t_exit "estimate --json is JSON with the run costs" 0 "" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ondemand_cost"] == 337920 and d["spot_cost"] == 162600, d
assert d["params"] == 6910365696' "$T_TMP/est.json"
"$S" cost estimate "$EX" --csv >"$T_TMP/est.csv"
t_has "estimate --csv run_cost row" "run_cost,337920.00,162600.00,\$" "$T_TMP/est.csv"
t_exit "implausible 67B plan is flagged" 0 "IMPLAUSIBLE.*5.37e\+09 tokens" "$S" cost estimate examples/implausible-67b.ini
t_exit "--set overrides a key" 0 "run hours   100 -> " "$S" cost estimate "$EX" --set cost.ondemand_hours=100 --set cost.spot_hours=0
t_exit "estimate without CONFIG is usage" 64 "missing CONFIG" "$S" cost estimate
t_exit "estimate unknown option is usage" 64 "unknown option" "$S" cost estimate "$EX" --bogus
t_exit "estimate of a missing file" 66 "" "$S" cost estimate "$T_TMP/nope.ini"
printf '[cost]\nondemand_hours = 10\n' >"$T_TMP/noprice.ini"
t_exit "estimate without prices is a config error" 78 "price" "$S" cost estimate "$T_TMP/noprice.ini"
t_exit "cost --help" 0 "usage: spotrain cost estimate" "$S" cost --help

# --- cost estimate: the memory line is the trainer's plan ----------------
# The same configuration through --dry-run (backend cuda, --world = nodes x
# gpus_per_node) and cost estimate: the per-GPU totals agree to the byte,
# and cost estimate offers no stage the trainer lacks.
MS="--set model.preset=deepseek-7b --set train.precision=bf16 --set train.micro_batch=1 --set cost.nodes=8"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $MS --json >"$T_TMP/mem.json"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $MS >"$T_TMP/mem.txt"
# shellcheck disable=SC2086
"$S" train "$EX" $MS --set train.backend=cuda --dry-run --world 64 >"$T_TMP/mem.dry" 2>&1
t_exit "dry-run and cost estimate: the same per-GPU bytes" 0 "" python3 -c '
import json, re, sys
m = json.load(open(sys.argv[1]))["memory"]
dry = re.search(r"per-GPU total: (\d+) bytes", open(sys.argv[2]).read())
assert dry, "no per-GPU total in the dry run"
assert m["per_gpu_bytes"] == int(dry.group(1)), (m["per_gpu_bytes"], dry.group(1))
parts = ("master", "working", "grads", "adam", "buckets", "activations", "attn_scratch", "workspace", "context", "comm")
assert sum(m[k] for k in parts) == m["per_gpu_bytes"], m
assert m["zero_stage"] == 1 and m["fits"] is True and 56 < m["per_gpu_gib"] < 62, m' "$T_TMP/mem.json" "$T_TMP/mem.dry"
t_has "dry-run says the same fits (the fp32 master sharded under bf16)" "fits a 80 GiB GPU" "$T_TMP/mem.dry"
t_has "estimate: the same fits" "fits in 80 GiB per GPU" "$T_TMP/mem.txt"
# shellcheck disable=SC2086
# zero = 1 pinned: auto would take the stage that fits; the advice for stage 1 is the point.
"$S" cost estimate "$EX" $MS --set cost.gpu_memory_gib=40 --set train.zero=1 >"$T_TMP/mem40.txt"
t_has "estimate at 40 GiB: more ranks shrink only Adam and the master" "more ranks shrink only Adam m and v, the fp32 master's range" "$T_TMP/mem40.txt"
t_has "estimate at 40 GiB: the next ZeRO stage offered" "train.zero = 2 shards the gradients" "$T_TMP/mem40.txt"
t_exit "estimate offers no ZeRO-2/ZeRO-3 or 16 B/param" 1 "" grep -Eq "ZeRO-[23]|16 B/param|fits in .* with ZeRO" "$T_TMP/mem.txt"
# shellcheck disable=SC2086
t_exit "estimate: fits with --set cost.gpu_memory_gib=96" 0 "fits in 96 GiB per GPU" "$S" cost estimate "$EX" $MS --set cost.gpu_memory_gib=96
# recompute = auto: both pick layers against a 50 GiB GPU (none needs
# 59.7 GiB at stage 1) and agree to the byte.
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $MS --set cost.gpu_memory_gib=50 --set train.zero=1 --set train.recompute=auto --json >"$T_TMP/rc.json"
# shellcheck disable=SC2086
"$S" train "$EX" $MS --set cost.gpu_memory_gib=50 --set train.zero=1 --set train.recompute=auto --set train.backend=cuda --dry-run --world 64 >"$T_TMP/rc.dry" 2>&1
t_exit "recompute auto: cost estimate and dry-run take layers, the same per-GPU bytes, and it fits" 0 "" python3 -c '
import json, re, sys
m = json.load(open(sys.argv[1]))["memory"]
d = open(sys.argv[2]).read()
assert "recompute auto: layers against a 50 GiB GPU" in d, d
assert m["recompute"] == "layers" and m["fits"] is True, m
assert m["per_gpu_bytes"] == int(re.search(r"per-GPU total: (\d+) bytes", d).group(1)), m' "$T_TMP/rc.json" "$T_TMP/rc.dry"

# The same with zero and recompute left at auto (the defaults): cost
# estimate resolves them against the GPU as --dry-run does (it planned
# stage 1 and "does NOT fit" here before), so the two agree to the byte.
A67="--set model.preset=deepseek-67b --set train.precision=bf16 --set train.micro_batch=1 --set cost.nodes=16"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $A67 --json >"$T_TMP/a67.json"
# shellcheck disable=SC2086
"$S" train "$EX" $A67 --set train.backend=cuda --dry-run --world 128 >"$T_TMP/a67.dry" 2>&1
t_exit "67B zero auto: cost estimate picks the dry-run's stage and recompute, to the byte" 0 "" python3 -c '
import json, re, sys
j = json.load(open(sys.argv[1]))["memory"]; d = open(sys.argv[2]).read()
assert "(ZeRO stage 3, zero auto" in d, d
assert j["zero_stage"] == 3 and j["recompute"] == "layers" and j["fits"] is True, j
assert j["per_gpu_bytes"] == int(re.search(r"per-GPU total: (\d+) bytes", d).group(1)), j' "$T_TMP/a67.json" "$T_TMP/a67.dry"

# deepseek-67b over 128 GPUs at zero 3: [comm] overlap's second gradient
# bucket in both plans, to the byte: a decoder layer's (q, k, v, o, gate,
# up, down, two norms), not the norm + lm_head bucket the first holds;
# overlap = false holds one.
for ov in true false; do
    M67="--set model.preset=deepseek-67b --set train.precision=bf16 --set train.micro_batch=1 --set cost.nodes=16
         --set train.zero=3 --set train.recompute=layers --set comm.overlap=$ov"
    # shellcheck disable=SC2086
    "$S" cost estimate "$EX" $M67 --json >"$T_TMP/m67-$ov.json"
    # shellcheck disable=SC2086
    "$S" train "$EX" $M67 --set train.backend=cuda --dry-run --world 128 >"$T_TMP/m67-$ov.dry" 2>&1
done
t_exit "67B zero 3: dry-run and cost estimate the same per-GPU bytes, overlap = false one gradient bucket less" 0 "" \
    python3 -c '
import json, re, sys
m = {}
for ov in ("true", "false"):
    j = json.load(open(sys.argv[1] + "/m67-%s.json" % ov))["memory"]
    d = int(re.search(r"per-GPU total: (\d+) bytes", open(sys.argv[1] + "/m67-%s.dry" % ov).read()).group(1))
    assert j["per_gpu_bytes"] == d and j["zero_stage"] == 3, (ov, j, d)
    m[ov] = j
k = 4 * (8192 * 8192 * 2 + 2 * 8192 * 1024 + 3 * 8192 * 22016 + 2 * 8192)
assert m["true"]["grads"] - m["false"]["grads"] == k, m
assert m["true"]["per_gpu_bytes"] - m["false"]["per_gpu_bytes"] == k, m' "$T_TMP"

# --- cost estimate: communication share of a step ------------------------
# 8 nodes x 8 A100 at 200 Gbit/s, DeepSeek's batch: the figures are derived
# here independently (the chain's fp32 reduce-scatter: 4 bytes a parameter
# leave each node, the busiest rank sends the whole vector; the flat bf16
# gather: 56 of a rank's 63 peers are off-node) and must agree with the
# estimate's JSON and with --dry-run's share for the same plan; stage 3
# gathers twice per micro-batch.
# Stage 1 pinned (auto picks the stage that fits, stage 2 here): its figures are the ones derived.
CS="--set cost.nodes=8 --set cost.network_gbps=200 --set train.global_batch=2304 --set train.zero=1"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $CS --json >"$T_TMP/comm.json"
t_exit "estimate comm share: JSON figures follow the volume model" 0 "" python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); c = d["comm_per_step"]; n = d["params"]
W, g = 64, 8
rank = 4 * n + (W - 1) / W * n * 2
node = 4 * n + g * (W - g) / W * n * 2
flat = g * 4 * n * (W - g) / W
assert c["reduce"] == "chain" and c["zero_stage"] == 1 and c["micro_batches"] == 3, c
assert abs(c["reduce_node_bytes"] - 4 * n) <= 1e-9 * n and abs(c["flat_reduce_node_bytes"] - flat) <= 1e-9 * flat, c
st = {s["zero"]: s for s in c["stages"]}
ag = g * (W - g) / W * n * 2
for z, red, gat in ((1, 1, 1), (2, 3, 1), (3, 3, 6)):
    want = red * 4 * n + gat * ag
    assert st[z]["reductions"] == red and st[z]["gathers"] == gat and st[z]["overlap"] == (z >= 2), st[z]
    assert abs(st[z]["node_bytes"] - want) <= 1e-9 * want, (z, st[z], want)
sec = node / (200e9 / 8)
comp = 2304 * 4096 * d["flops_per_token"] / (W * 312e12 * 0.4)
for k, v in (("rank_bytes", rank), ("node_bytes", node), ("network_seconds", sec), ("compute_seconds", comp),
             ("share", sec / (sec + comp))):
    assert abs(c[k] - v) <= 1e-9 * v, (k, c[k], v)
assert 0.09 < c["share"] < 0.095, c' "$T_TMP/comm.json"
# The bound on an overlap of the reduce-scatter with the backward pass (not
# built): the last micro-batch's backward, 2/3 of its compute, at most the
# whole reduce-scatter (the chain's 4 bytes a parameter per node). 36 rows a
# rank: micro-batches of 2 leave 2 rows last, of 16 leave 4 (16 + 16 + 4);
# on 2 nodes 144 rows in 16s leave 16: each backward outlasts the chain.
for case in "8 2 2/36" "8 16 4/36" "2 16 16/144"; do
    nodes=${case%% *} rest=${case#* }
    mb=${rest%% *} frac=${rest#* }
    "$S" cost estimate "$EX" --set cost.nodes="$nodes" --set cost.network_gbps=200 --set train.global_batch=2304 \
        --set train.micro_batch="$mb" --set train.zero=1 --json >"$T_TMP/ovl.json"
    t_exit "estimate overlap bound: $nodes nodes, micro-batch $mb (last piece $frac of a rank's rows)" 0 "" python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["comm_per_step"]; f = eval(sys.argv[2])
rs = 4 * json.load(open(sys.argv[1]))["params"] / (200e9 / 8)
bwd = c["compute_seconds"] * f * 2 / 3
want = min(rs, bwd)
assert abs(c["reduce_scatter_seconds"] - rs) <= 1e-9 * rs, (c, rs)
assert abs(c["overlap_max_seconds"] - want) <= 1e-9 * want, (c, want)' "$T_TMP/ovl.json" "$frac"
done
t_has "estimate overlap bound: 2 nodes hide the whole reduce-scatter" '"overlap_max_seconds":1.1056' "$T_TMP/ovl.json"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $CS $Z1 >"$T_TMP/comm.txt"
t_has "estimate comm share: the table line" "9.1% of a step when not overlapped" "$T_TMP/comm.txt"
t_has "estimate: the volume per ZeRO stage, overlapped on the GPUs' comm stream" "zero 3: 617.835 GiB = gradients 3 x 25.743 GiB + parameter gathers 6 x 90.101 GiB; overlap: each bucket's reduce-scatter behind the backward of the following buckets, each layer's gather behind the previous layer's compute; on GPUs the comm stream, unverified on a GPU" "$T_TMP/comm.txt"
t_has "estimate: the flat exchange for comparison" "the flat all-to-all exchange the chain replaced sent 180.202 GiB" "$T_TMP/comm.txt"
# shellcheck disable=SC2086
"$S" train "$EX" --dry-run --world 64 $CS $Z1 >"$T_TMP/comm_dry.txt" 2>&1
t_has "dry-run states the same share" "9% of a step when not overlapped" "$T_TMP/comm_dry.txt"
t_has "dry-run, stage 1: nothing overlaps its one reduction; the bound of an overlap that is not built" "stage 1 reduces once, after the backward pass: nothing overlaps it (an overlap with the last micro-batch's backward, not built, could hide at most 1.11 s of the 1.11 s reduce-scatter" "$T_TMP/comm_dry.txt"
# Stages 2-3 overlap under [comm] overlap (the CPU's comm worker, the CUDA
# backend's comm stream): the exposed time is the network time less what
# runs behind compute; with overlap = false it is all of it.
# shellcheck disable=SC2086
"$S" train "$EX" --dry-run --world 64 $CS --set train.zero=2 --set train.backend=cpu >"$T_TMP/ov_cpu.txt" 2>&1
t_exit "dry-run, zero 2, backend cpu: overlapped, the hidden and exposed time" 0 "" \
    grep -qE "overlapped \(\[comm\] overlap\): about [0-9.]+ s of it hidden behind compute, [0-9.]+ s exposed" "$T_TMP/ov_cpu.txt"
t_exit "dry-run, zero 2, backend cpu: the stage line says what overlaps" 0 "" \
    grep -qE "zero 2: .*overlap: each bucket's reduce-scatter behind the backward of the following buckets$" "$T_TMP/ov_cpu.txt"
# shellcheck disable=SC2086
"$S" train "$EX" --dry-run --world 64 $CS --set train.zero=3 --set train.backend=cpu --set comm.overlap=false >"$T_TMP/ov_off.txt" 2>&1
t_has "dry-run, zero 3, overlap = false: not overlapped, and what it would hide" "not overlapped ([comm] overlap = false): overlapped, the bucket exchanges would hide about" "$T_TMP/ov_off.txt"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $CS --set train.zero=2 --json >"$T_TMP/ov_gpu.json"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $CS --set train.zero=2 --set comm.overlap=false --json >"$T_TMP/ov_gpu_off.json"
t_exit "estimate, zero 2 on GPUs: hidden behind the backward, exposed = network time less it; none with overlap = false" \
    0 "" python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["comm_per_step"]
f = json.load(open(sys.argv[2]))["comm_per_step"]
assert c["zero_stage"] == 2 and 0 < c["overlap_hidden_seconds"] < c["network_seconds"], c
assert abs(c["exposed_seconds"] - (c["network_seconds"] - c["overlap_hidden_seconds"])) <= 1e-9 * c["network_seconds"], c
assert [s["overlap"] for s in c["stages"]] == [False, True, True], c
assert f["overlap_hidden_seconds"] == 0 and f["exposed_seconds"] == f["network_seconds"], f
assert [s["overlap"] for s in f["stages"]] == [False, False, False], f' "$T_TMP/ov_gpu.json" "$T_TMP/ov_gpu_off.json"
# shellcheck disable=SC2086
"$S" cost estimate "$EX" $CS --set train.zero=2 >"$T_TMP/ov_gpu.txt"
t_has "estimate, zero 2 on GPUs: overlapped on the comm stream, said unverified" "overlapped ([comm] overlap; on GPUs the comm stream, unverified on a GPU): about 3.12 s of it" "$T_TMP/ov_gpu.txt"
# shellcheck disable=SC2086
"$S" train "$EX" --dry-run --world 64 $CS --set train.zero=2 >"$T_TMP/ov_gpu_dry.txt" 2>&1
t_has "dry-run, zero 2, backend auto: the same overlap" "overlapped ([comm] overlap; on GPUs the comm stream, unverified on a GPU): about 3.12 s of it hidden behind compute, 4.07 s exposed" "$T_TMP/ov_gpu_dry.txt"
t_has "estimate states the same overlap bound" "could hide at most 1.11 s of the" "$T_TMP/comm.txt"
t_has "dry-run: the same volume per ZeRO stage and overlap" "zero 3: 617.835 GiB = gradients 3 x 25.743 GiB + parameter gathers 6 x 90.101 GiB; overlap: each bucket's reduce-scatter behind the backward of the following buckets, each layer's gather behind the previous layer's compute; on GPUs the comm stream, unverified on a GPU" "$T_TMP/comm_dry.txt"
# shellcheck disable=SC2086
t_exit "estimate comm share: CSV row" 0 "^comm_share,0.0911" "$S" cost estimate "$EX" $CS --csv
t_exit "estimate one node: nothing leaves it" 0 "all of it stays inside the node" "$S" cost estimate "$EX" --set cost.network_gbps=200
t_exit "estimate without network_gbps says what to set" 0 "set cost.network_gbps" "$S" cost estimate "$EX" --set cost.nodes=2
t_exit "estimate without network_gbps: no share in JSON" 1 "" sh -c "'$S' cost estimate '$EX' --set cost.nodes=2 --json | grep -q share"

# --- cost estimate prints only what its input determines ------------------
printf '[price.gpu]\nondemand = 98.32\nspot = 19.2\n' >"$T_TMP/prices.ini"
"$S" cost estimate "$T_TMP/prices.ini" >"$T_TMP/p.txt" 2>&1
t_exit "prices only: exit 0" 0 "" "$S" cost estimate "$T_TMP/prices.ini"
t_has "prices only: the per-hour prices" "98.32 -> 19.20" "$T_TMP/p.txt"
t_has "prices only: says what to add for the run" "add cost.ondemand_hours" "$T_TMP/p.txt"
t_exit "prices only: no default GPUs, model or tokens" 1 "" grep -Eq "h100|tiny|tokens \(|per parameter|ZeRO" "$T_TMP/p.txt"
"$S" cost estimate "$T_TMP/prices.ini" --set cost.ondemand_hours=10 >"$T_TMP/p10.txt" 2>&1
t_has "hours without a model: the run cost" "run cost    983.20 -> " "$T_TMP/p10.txt"
t_has "hours without a model: says what work and memory need" "add the model" "$T_TMP/p10.txt"
t_has "default overheads are labelled as such" "built-in defaults: set cost.interruptions_per_hour" "$T_TMP/p10.txt"
t_exit "spot/ includes nothing from train/" 1 "" grep -l 'train/' spot/*.c spot/*.h
t_exit "hours without a model: no token budget" 1 "" grep -Eq "per parameter|8 GPUs|h100" "$T_TMP/p10.txt"
t_exit "prices only --json: no invented figures" 0 '"have_work":false' sh -c "'$S' cost estimate '$T_TMP/prices.ini' --json | tr -d ' \n'"
t_exit "prices only --json: shortest numbers" 0 '"spot":19.2}' sh -c "'$S' cost estimate '$T_TMP/prices.ini' --json | tr -d ' \n'"
t_exit "tokens without a model is a config error" 78 "cost.tokens needs the model" "$S" cost estimate "$T_TMP/prices.ini" --set cost.tokens=1e12
t_exit "cost estimate --help is its own usage" 0 "^usage: spotrain cost estimate CONFIG" sh -c "'$S' cost estimate --help | head -1"
t_exit "cost estimate --help omits report" 1 "" sh -c "'$S' cost estimate --help | grep -q report"

# --- cost report of train, then train --force in the same run_dir ---------
F="--set train.max_steps=6 --set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64 --set model.seq_len=16 --set train.global_batch=4 --set train.micro_batch=4 --set train.val_every=0 --set checkpoint.interval_steps=3 --set spot.provider=none --set price.n.ondemand=10 --set price.n.spot=4 --quiet"
RF=$T_TMP/forced
# shellcheck disable=SC2086
"$S" train /dev/null --set train.run_dir="$RF" $F >/dev/null 2>&1
# shellcheck disable=SC2086
"$S" train /dev/null --set train.run_dir="$RF" $F --set train.max_steps=4 --force >/dev/null 2>&1
t_exit "train --force: the ledger holds both runs" 0 "" test "$(grep -c '"event":"start"' "$RF/events.jsonl")" -eq 2
"$S" cost report "$RF" --json >"$T_TMP/forced.json"
t_exit "train --force: report counts only the new run" 0 "" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["segments"] == 1 and d["lost_steps"] == 0 and d["interruptions"] == 0, d
assert d["step"] == 4 and d["max_steps"] == 4 and d["finished"], d
assert d["earlier_runs_ignored"] == 1, d
assert d["ondemand_so_far"] >= 0 and d["spend"] >= 0, d' "$T_TMP/forced.json"
t_exit "train --force: the table says the earlier run was ignored" 0 "1 earlier run in events.jsonl ignored" "$S" cost report "$RF"
# A refused resume (another model shape) trained nothing: it is no segment,
# and it does not make the steps before it look redone.
# shellcheck disable=SC2086
"$S" resume /dev/null --set train.run_dir="$RF" $F --set train.max_steps=8 --set model.dim=64 >/dev/null 2>&1
"$S" cost report "$RF" --json >"$T_TMP/refused.json"
t_exit "refused resume: not a segment, no steps counted as redone" 0 "" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["segments"] == 1 and d["lost_steps"] == 0 and d["interruptions"] == 0, d
assert d["step"] == 4 and d["max_steps"] == 4 and d["failed_starts"] == 1, d' "$T_TMP/refused.json"
t_exit "refused resume: the table says so" 0 "1 start refused" "$S" cost report "$RF"

# --- the Prometheus textfile of a real run --------------------------------
# shellcheck disable=SC2086
"$S" train /dev/null --set train.run_dir="$T_TMP/prom" $F --set metrics.textfile="$T_TMP/spotrain.prom" --set metrics.every=2 >/dev/null 2>&1
t_exit "the run wrote its textfile" 0 "" grep -q "^spotrain_max_steps{run=" "$T_TMP/spotrain.prom"
t_exit "textfile prices carry no float noise" 0 "^spotrain_price_dollars_per_hour\{[^}]*\} 4$" cat "$T_TMP/spotrain.prom"
if command -v promtool >/dev/null 2>&1; then
    t_exit "promtool check metrics accepts the textfile" 0 "" sh -c "promtool check metrics <'$T_TMP/spotrain.prom'"
else
    echo "SKIP promtool check metrics: promtool not installed (apt-get install prometheus)"
fi

# --- cost report -----------------------------------------------------------
R=$T_TMP/run
mkdir -p "$R"
cat >"$R/events.jsonl" <<'EOT'
{"ts":1000.0,"event":"start","step":0,"world":2,"nodes":2,"resumed_from":null,"tokens_per_step":1000,"max_steps":1000,"config":"x.ini","backend":"cpu","params":100}
{"ts":1360.0,"event":"step","step":100,"loss":2.0,"lr":0.001,"grad_norm":1,"tokens":100000,"tok_per_s":300,"ms":3600,"train_seconds":360}
{"ts":1361.0,"event":"checkpoint","step":100,"path":"ckpt/step-00000100","raw_bytes":10,"stored_bytes":5,"stall_ms":1800,"write_ms":100}
{"ts":1720.0,"event":"step","step":200,"loss":1.5,"lr":0.001,"grad_norm":1,"tokens":200000,"tok_per_s":300,"ms":3600,"train_seconds":720}
{"ts":1750.0,"event":"notice","source":"aws","detail":"terminate","deadline":1870}
{"ts":4600.0,"event":"start","step":100,"world":2,"nodes":2,"resumed_from":"ckpt/step-00000100","tokens_per_step":1000,"max_steps":1000,"config":"x.ini","backend":"cpu","params":100}
{"ts":4960.0,"event":"step","step":200,"loss":1.5,"lr":0.001,"grad_norm":1,"tokens":200000,"tok_per_s":300,"ms":3600,"train_seconds":720}
{"ts":4961.0,"event":"checkpoint","step":200,"path":"ckpt/step-00000200","raw_bytes":10,"stored_bytes":5,"stall_ms":1800,"write_ms":100}
{"ts":5320.0,"event":"step","step":300,"loss":1.2,"lr":0.001,"grad_norm":1,"tokens":300000,"tok_per_s":300,"ms":3600,"train_seconds":1080}
{"ts":5330.0,"event":"exit","step":300,"code":75,"reason":"notice"}
{"ts":8200.0,"event":"start","step":300,"world":2,"nodes":2,"resumed_from":"ckpt/step-00000300","tokens_per_step":1000,"max_steps":1000,"config":"x.ini","backend":"cpu","params":100}
{"ts":8560.0,"event":"step","step":400,"loss":1.1,"lr":0.001,"grad_norm":1,"tokens":400000,"tok_per_s":300,"ms":3600,"train_seconds":1440}
EOT
printf '{"ts":8600.0,"event":"step","step":41' >>"$R/events.jsonl"
printf '[price.node]\nondemand = 10\nspot = 4\n[price.disk]\nondemand = 1\nspot = 1\n' >"$R/config.ini"
"$S" cost report "$R" >"$T_TMP/rep.txt" 2>"$T_TMP/rep.err"
t_exit "report exits 0 on a torn last line" 0 "" "$S" cost report "$R"
if [ -s "$T_TMP/rep.err" ]; then t_bad "report is quiet on stderr" "$(cat "$T_TMP/rep.err")"; else t_ok "report is quiet on stderr"; fi
t_has "report counts interruptions" "3 (2 interruptions: 1 preempted exits, 1 killed; 1 notices" "$T_TMP/rep.txt"
t_has "report lost work" "100 steps redone (6.3 min)" "$T_TMP/rep.txt"
t_has "report spend" "spend so far        5.11" "$T_TMP/rep.txt"
t_has "report projection" "to finish           7.67; projected total 12.78" "$T_TMP/rep.txt"
t_has "report on-demand counterfactual" "8.80 so far, 22.00 for the whole run" "$T_TMP/rep.txt"
"$S" cost report "$R" --csv >>"$T_TMP/spend.csv"
"$S" cost report "$R" --csv >>"$T_TMP/spend.csv"
t_exit "--csv without --header: one row per call" 0 "" test "$(wc -l <"$T_TMP/spend.csv")" -eq 2
t_exit "--csv rows carry no header" 1 "" grep -q '^time,' "$T_TMP/spend.csv"
"$S" cost report "$R" --csv --header >"$T_TMP/h.csv"
t_exit "--csv --header: header plus one row" 0 "" test "$(wc -l <"$T_TMP/h.csv")" -eq 2
t_has "--csv header names the columns" "time,run_dir,segments,interruptions,notices,run_hours" "$T_TMP/h.csv"
t_exit "--csv row values" 0 ",3,2,1,0.5111,1.0222,400,1000,100,0.0010,5.11,8.80,0.7667,7.67,12.78,22.00" cat "$T_TMP/h.csv"
t_exit "report --json" 0 '"lost_steps":100' sh -c "'$S' cost report '$R' --json | tr -d ' \n'"
t_exit "report --config overrides RUN_DIR/config.ini" 0 "spend so far        30.67" "$S" cost report "$R" --config "$EX"
# A finished run of 12 s (make demo's scale): figures a reader can see,
# not a row of 0.00 h and 0.00.
RS=$T_TMP/short
mkdir -p "$RS"
cat >"$RS/events.jsonl" <<'EOT'
{"ts":1000.0,"event":"start","step":0,"world":1,"nodes":1,"resumed_from":null,"tokens_per_step":512,"max_steps":200,"config":"x.ini","backend":"cpu","params":100}
{"ts":1011.5,"event":"step","step":200,"loss":1.0,"lr":0.001,"grad_norm":1,"tokens":102400,"tok_per_s":9000,"ms":50,"train_seconds":10}
{"ts":1011.6,"event":"checkpoint","step":200,"path":"ckpt/step-00000200","raw_bytes":10,"stored_bytes":5,"stall_ms":90,"write_ms":100}
{"ts":1012.0,"event":"exit","step":200,"code":0}
EOT
printf '[price.node]\nondemand = 3.06\nspot = 0.92\n' >"$RS/config.ini"
"$S" cost report "$RS" >"$T_TMP/short.txt"
t_has "short finished run: its running time in seconds, no 'now'" "running             12.0 s on 1 node, " "$T_TMP/short.txt"
t_has "short finished run: the checkpoint stall in seconds" "checkpoint stall    90.0 ms over 1 checkpoints" "$T_TMP/short.txt"
t_has "short finished run: the prices it was priced at" "prices              0.92 spot, 3.06 on-demand per hour of the 1 node" "$T_TMP/short.txt"
t_has "short finished run: the spend to two significant digits, and per step" "spend so far        0.0031 (0.000015 per step)" "$T_TMP/short.txt"
t_has "short finished run: on-demand to two significant digits" "on-demand would be  0.0085 so far (same" "$T_TMP/short.txt"
t_has "short finished run: nothing left to finish" "time to finish      none left: finished" "$T_TMP/short.txt"
t_exit "report of a missing run dir" 66 "" "$S" cost report "$T_TMP/none"
: >"$T_TMP/empty.jsonl"
mkdir -p "$T_TMP/empty" && : >"$T_TMP/empty/events.jsonl"
t_exit "report without a start record" 65 "no start record" "$S" cost report "$T_TMP/empty"
t_exit "--header without --csv is usage" 64 "" "$S" cost report "$R" --header

# --- bid -------------------------------------------------------------------
H=$T_TMP/h1.csv
{
    echo "timestamp,zone,instance_type,price"
    k=0
    while [ $k -lt 10 ]; do
        echo "$((1714521600 + k * 36000)),z1,p5,1.0"
        echo "$((1714521600 + k * 36000 + 32400)),z1,p5,3.0"
        k=$((k + 1))
    done
    echo "$((1714521600 + 360000)),z1,p5,1.0"
    echo "1714521600,z2,p5,1.5"
} >"$H"
t_exit "bid recommends the cheaper zone and cap" 0 "recommendation: z1 p5, max price 1.0000/h" "$S" bid --history "$H" --hours 10 --restart-minutes 30 --ondemand 4
t_exit "bid: no AWS note for a CSV history" 1 "" sh -c "'$S' bid --history '$H' | grep -q 'since 2017'"
cat >"$T_TMP/aws.json" <<'EOT'
{"SpotPriceHistory": [
 {"AvailabilityZone":"us-east-1a","InstanceType":"p4d.24xlarge","ProductDescription":"Linux/UNIX","SpotPrice":"12.000000","Timestamp":"2024-05-01T00:00:00.000Z"},
 {"AvailabilityZone":"us-east-1a","InstanceType":"p4d.24xlarge","ProductDescription":"Linux/UNIX","SpotPrice":"12.500000","Timestamp":"2024-05-02T00:00:00.000Z"},
 {"AvailabilityZone":"us-east-1b","InstanceType":"p4d.24xlarge","ProductDescription":"Linux/UNIX","SpotPrice":"13.000000","Timestamp":"2024-05-01T00:00:00.000Z"}
]}
EOT
cat >"$T_TMP/ali.json" <<'EOT'
{"RequestId":"x","Currency":"CNY","SpotPrices":{"SpotPriceType":[
 {"ZoneId":"cn-hangzhou-i","InstanceType":"ecs.gn7i-c8g1.2xlarge","SpotPrice":3.1,"OriginPrice":12.0,"Timestamp":"2024-05-01T00:00:00Z"},
 {"ZoneId":"cn-hangzhou-i","InstanceType":"ecs.gn7i-c8g1.2xlarge","SpotPrice":3.3,"OriginPrice":12.0,"Timestamp":"2024-05-02T00:00:00Z"}
]}}
EOT
t_exit "bid says bids no longer set AWS prices (AWS history)" 0 "since 2017" "$S" bid --history "$T_TMP/aws.json"
t_exit "bid: no AWS note for an Alibaba history" 1 "" sh -c "'$S' bid --history '$T_TMP/ali.json' | grep -q 'since 2017'"
t_exit "bid: Alibaba prices carry their currency" 0 "max price 3.3000 CNY/h" "$S" bid --history "$T_TMP/ali.json"
t_exit "bid: Alibaba on-demand in the same currency" 0 "on-demand 12.0000 CNY/h" "$S" bid --history "$T_TMP/ali.json"
"$S" bid --history "$T_TMP/aws.json" "$T_TMP/ali.json" >"$T_TMP/mixed.txt" 2>&1
t_has "bid: two providers are ranked apart" "2 groups are ranked apart" "$T_TMP/mixed.txt"
t_has "bid: one recommendation for the AWS type in USD" "recommendation for p4d.24xlarge USD: us-east-1a p4d.24xlarge" "$T_TMP/mixed.txt"
t_has "bid: one recommendation for the Alibaba type in CNY" "recommendation for ecs.gn7i-c8g1.2xlarge CNY: cn-hangzhou-i" "$T_TMP/mixed.txt"
t_exit "bid --json: one recommendation per group, no single winner" 0 "" sh -c "'$S' bid --history '$T_TMP/aws.json' '$T_TMP/ali.json' --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert \"recommendation\" not in d, d.keys()
r = {x[\"currency\"]: x[\"instance_type\"] for x in d[\"recommendations\"]}
assert r == {\"USD\": \"p4d.24xlarge\", \"CNY\": \"ecs.gn7i-c8g1.2xlarge\"}, r'"
t_exit "bid --per-gpu still never mixes currencies" 0 "2 groups are ranked apart \(one per currency\)" "$S" bid --history "$T_TMP/aws.json" "$T_TMP/ali.json" --per-gpu
t_exit "bid --alert-above refuses two currencies" 64 "CNY and USD|USD and CNY" "$S" bid --history "$T_TMP/aws.json" "$T_TMP/ali.json" --alert-above 5
printf '2024-05-01T00:00:00Z,z1,big,16.0,USD\n2024-05-02T00:00:00Z,z1,big,16.0,USD\n2024-05-01T00:00:00Z,z1,small,3.0,USD\n2024-05-02T00:00:00Z,z1,small,3.0,USD\n' >"$T_TMP/types.csv"
t_exit "bid: two instance types get one recommendation each" 0 "recommendation for small USD: z1 small" "$S" bid --history "$T_TMP/types.csv"
t_exit "bid --per-gpu needs GPU counts" 64 "GPUs of instance type big unknown; pass --gpus big=N" "$S" bid --history "$T_TMP/types.csv" --per-gpu
t_exit "bid --per-gpu ranks by cost per GPU" 0 "recommendation: z1 big, max price 16.0000 USD/h" "$S" bid --history "$T_TMP/types.csv" --per-gpu --gpus big=8 --gpus small=1
printf '0,z,t,1.0\n3600000,z,t,3.0\n3603600,z,t,3.0\n' >"$T_TMP/spike.csv"
t_exit "bid warns when the cap is below the current price" 0 "WARNING: the cap 1.0000 is below the current price 3.0000: the request would not run now" "$S" bid --history "$T_TMP/spike.csv" --hours 1
printf '0,z,t,3.0\n342000,z,t,1.0\n360000,z,t,1.0\n' >"$T_TMP/rare.csv"
t_exit "bid warns about single-digit availability" 0 "WARNING: at this cap the price was low enough only 5.0% of the time" "$S" bid --history "$T_TMP/rare.csv" --hours 1 --restart-minutes 0
t_exit "bid: one group keeps the plain recommendation line" 1 "" sh -c "'$S' bid --history '$H' | grep -q 'WARNING\\|ranked apart'"
t_exit "bid long recovery takes the never-interrupted cap" 0 "z1 p5, max price 3.0000/h" "$S" bid --history "$H" --hours 10 --restart-minutes 300
t_exit "bid --json" 0 '"zone":"z1"' sh -c "'$S' bid --history '$H' --hours 10 --restart-minutes 30 --json | tr -d ' \n'"
t_exit "bid --alert-above crossing exits 3" 3 "alert" "$S" bid --history "$H" --hours 10 --restart-minutes 30 --alert-above 0.5
t_exit "bid --alert-above not crossed exits 0" 0 "" "$S" bid --history "$H" --hours 10 --restart-minutes 30 --alert-above 2
t_exit "bid several files" 0 "z1 p5" "$S" bid --history "$H" "$H"
printf '{"SpotPriceHistory": [' >"$T_TMP/trunc.json"
t_exit "bid truncated JSON" 65 "not valid JSON" "$S" bid --history "$T_TMP/trunc.json"
printf '{"SpotPriceHistory": []}' >"$T_TMP/empty.json"
t_exit "bid empty history" 65 "no price records" "$S" bid --history "$T_TMP/empty.json"
printf '2024-05-01T00:00:00Z,z,t,-1\n' >"$T_TMP/neg.csv"
t_exit "bid negative price" 65 "neg.csv:1" "$S" bid --history "$T_TMP/neg.csv"
truncate -s 300M "$T_TMP/huge.csv"
t_exit "bid huge file refused" 65 "MiB" "$S" bid --history "$T_TMP/huge.csv"
rm -f "$T_TMP/huge.csv"
t_exit "bid missing file" 66 "" "$S" bid --history "$T_TMP/missing.json"
t_exit "bid without files" 64 "" "$S" bid
t_exit "bid bad number" 64 "" "$S" bid --history "$H" --hours x
t_exit "bid --help" 0 "usage: spotrain bid" "$S" bid --help
t_end
