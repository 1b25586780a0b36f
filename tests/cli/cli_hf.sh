#!/bin/sh
# ckpt export (f32, bf16, sharded, tokenizer copy) and [model] init_from:
# export -> import is bitwise in f32, a bf16 export imports as the rounded
# weights (PyTorch's bf16 rounding is the oracle), F16 imports, the
# safetensors library reads our shards, and mismatches are one clear line.
# module: hf ckpt
. "$(dirname "$0")/lib.sh"
S=$SPOTRAIN
VENV=${SPOTRAIN_VENV:-$PWD/build/venv}
cd "$T_TMP" || exit 1

printf '{"eos_token": "<|endoftext|>"}' > tokenizer_config.json
t_byte_tokenizer tokenizer.json
cat > a.ini <<EOF
[data]
tokenizer = tokenizer.json
[train]
run_dir = a
max_steps = 3
global_batch = 4
micro_batch = 4
val_every = 0
[checkpoint]
interval_steps = 3
EOF
# lr = 0 and no decay: a run that starts from imported weights saves them unchanged.
cat > b.ini <<EOF
[model]
init_from = e32
[train]
run_dir = b
max_steps = 1
lr = 0
min_lr = 0
weight_decay = 0
global_batch = 4
micro_batch = 4
val_every = 0
[checkpoint]
interval_steps = 1
EOF
digest() { "$S" ckpt inspect "$1" --json 2>/dev/null | /usr/bin/python3 -c "
import json,sys; d=json.load(sys.stdin); d=d[-1] if isinstance(d,list) else d
print(d['digest']['params'])"; }

"$S" train a.ini --quiet || t_bad "train the source run"
t_exit "export f32" 0 "exported step 3 .*f32, 1 file" "$S" ckpt export a -o e32
[ -s e32/tokenizer.json ] && [ -s e32/tokenizer_config.json ] && t_ok "export copies tokenizer.json and tokenizer_config.json" || t_bad "tokenizer copy" "$(ls e32)"
da=$(digest a/ckpt)
t_exit "fine-tune from the f32 export" 0 "" "$S" train b.ini --quiet
db=$(digest b/ckpt)
[ -n "$da" ] && [ "$da" = "$db" ] && t_ok "f32 export -> import is bitwise ($da)" || t_bad "f32 round trip" "$da vs $db"
"$S" ckpt inspect b/ckpt 2>/dev/null | grep -q "step-00000001" && t_ok "the fine-tune starts at step 0" || t_bad "fine-tune step"

t_exit "export bf16" 0 "bf16" "$S" ckpt export a -o e16 --dtype bf16
"$S" train b.ini --quiet --force --set model.init_from=e16 --set train.run_dir=c || t_bad "import bf16"
"$S" ckpt export c -o c32 >/dev/null || t_bad "re-export"
out=$(/usr/bin/python3 - <<'PY'
import json, struct, numpy as np, torch
def load(path):
    raw = open(path, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        b, e = v["data_offsets"]; dt = {"F32": np.float32, "BF16": np.uint16, "F16": np.float16}[v["dtype"]]
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dt).reshape(v["shape"])
    return h, out
_, a = load("e32/model.safetensors")
h16, b16 = load("e16/model.safetensors")
_, c = load("c32/model.safetensors")
bad = 0
for k, v in a.items():
    want = torch.from_numpy(v.copy()).to(torch.bfloat16)
    bad += not np.array_equal(b16[k], want.view(torch.int16).numpy().view(np.uint16))
    bad += not np.array_equal(c[k], want.to(torch.float32).numpy())
print("ok" if bad == 0 and h16["__metadata__"]["format"] == "pt" else "bad %d" % bad)
PY
)
[ "$out" = ok ] && t_ok "bf16 export rounds to nearest even (PyTorch) and imports exactly" || t_bad "bf16 export/import" "$out"

t_exit "sharded export" 0 "f32, [0-9]+ files" "$S" ckpt export a -o esh --max-shard-size 200KB
nsh=$(ls esh/model-*-of-*.safetensors 2>/dev/null | wc -l)
[ "$nsh" -gt 1 ] && [ -s esh/model.safetensors.index.json ] && [ ! -e esh/model.safetensors ] &&
    t_ok "shards of at most 200KB plus model.safetensors.index.json ($nsh files)" || t_bad "shards" "$(ls esh)"
big=$(find esh -name 'model-*' -size +205k | wc -l)
[ "$big" -eq 0 ] && t_ok "no shard exceeds the limit" || t_bad "shard size"
"$S" train b.ini --quiet --force --set model.init_from=esh --set train.run_dir=d || t_bad "import shards"
dd=$(digest d/ckpt)
[ "$da" = "$dd" ] && t_ok "sharded export -> import is bitwise" || t_bad "sharded round trip" "$da vs $dd"

# F16 weights import as their exact f32 values.
/usr/bin/python3 - <<'PY'
import json, os, shutil, struct, numpy as np
raw = open("e32/model.safetensors", "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
os.makedirs("f16", exist_ok=True); shutil.copy("e32/config.json", "f16/config.json")
hdr, data, off = {"__metadata__": {"format": "pt"}}, b"", 0
for k, v in h.items():
    if k == "__metadata__": continue
    b, e = v["data_offsets"]; x = np.frombuffer(raw[8 + n + b:8 + n + e], np.float32).astype(np.float16).tobytes()
    hdr[k] = {"dtype": "F16", "shape": v["shape"], "data_offsets": [off, off + len(x)]}; data += x; off += len(x)
j = json.dumps(hdr).encode(); j += b" " * (-len(j) % 8)
open("f16/model.safetensors", "wb").write(struct.pack("<Q", len(j)) + j + data)
PY
"$S" train b.ini --quiet --force --set model.init_from=f16 --set train.run_dir=f || t_bad "import f16"
"$S" ckpt export f -o f32 >/dev/null
out=$(/usr/bin/python3 -c "
import json,struct,numpy as np
def ld(p):
    raw=open(p,'rb').read(); n=struct.unpack('<Q',raw[:8])[0]; return raw[8+n:]
a=np.frombuffer(ld('e32/model.safetensors'),np.float32).astype(np.float16).astype(np.float32)
b=np.frombuffer(ld('f32/model.safetensors'),np.float32)
print('ok' if np.array_equal(a,b) else 'bad')")
[ "$out" = ok ] && t_ok "F16 weights import exactly" || t_bad "f16 import" "$out"

t_exit "a shape key that disagrees with config.json" 78 "model.dim = 64 disagrees with e32/config.json" \
    "$S" train b.ini --force --set model.dim=64 --set train.run_dir=x
t_exit "a shape key that agrees is fine" 0 "" "$S" train b.ini --quiet --force --set model.dim=128 --set train.run_dir=y
mkdir -p miss && cp e32/config.json miss/ && /usr/bin/python3 - <<'PY'
import json, struct
raw = open("e32/model.safetensors", "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
del h["model.norm.weight"]
j = json.dumps(h).encode(); j += b" " * (-len(j) % 8)
open("miss/model.safetensors", "wb").write(struct.pack("<Q", len(j)) + j + raw[8 + n:])
PY
t_exit "a missing tensor is named" 65 "tensor model.norm.weight is missing" "$S" train b.ini --force --set model.init_from=miss --set train.run_dir=m
# --dry-run reads the safetensors headers as train would, and a refused start
# leaves no trace in a run directory that did not exist.
t_exit "--dry-run names a missing tensor" 65 "tensor model.norm.weight is missing" \
    "$S" train b.ini --dry-run --set model.init_from=miss --set train.run_dir=m
"$S" train b.ini --quiet --set model.init_from=miss --set train.run_dir=refused 2>/dev/null
[ ! -e refused ] && t_ok "a start refused at the weight check writes nothing" ||
    t_bad "refused start" "left $(find refused 2>/dev/null | tr '\n' ' ')"
"$S" resume b.ini --quiet --set model.init_from=miss --set train.run_dir=refused_r 2>/dev/null
[ $? -eq 65 ] && [ ! -e refused_r ] && t_ok "a resume with no checkpoint is refused at the weight check, writing nothing" ||
    t_bad "refused resume" "left $(find refused_r 2>/dev/null | tr '\n' ' ')"
sed 's/"intermediate_size": 352/"intermediate_size": 350/' e32/config.json > miss/config.json
cp e32/model.safetensors miss/
t_exit "a wrong shape is named" 65 "gate_proj.weight has shape \[352, 128\], the model wants \[350, 128\]" \
    "$S" train b.ini --force --set model.init_from=miss --set train.run_dir=m
t_exit "--dry-run names a wrong shape" 65 "gate_proj.weight has shape \[352, 128\], the model wants \[350, 128\]" \
    "$S" train b.ini --dry-run --set model.init_from=miss --set train.run_dir=m
t_exit "--dry-run of a good init_from says what it read" 0 "init_from: e32/model.safetensors holds every tensor" \
    "$S" train b.ini --dry-run --set train.run_dir=m
sed 's/"num_key_value_heads": [0-9]*/"num_key_value_heads": 3/' e32/config.json > miss/config.json
t_exit "num_key_value_heads = 3 is blamed on config.json" 78 "miss/config.json: num_attention_heads .* num_key_value_heads \(3\)" \
    "$S" train b.ini --dry-run --set model.init_from=miss --set train.run_dir=m

# Which files: model.safetensors wins over an index beside it (as in
# transformers), and pytorch_model.bin alone is named as unread.
mkdir -p both && cp e32/config.json e32/model.safetensors both/ &&
    /usr/bin/python3 -c "
import json; h = json.load(open('esh/model.safetensors.index.json'))
h['weight_map'] = {k: 'gone.safetensors' for k in h['weight_map']}
json.dump(h, open('both/model.safetensors.index.json', 'w'))"
t_exit "model.safetensors wins over the index, and the log says so" 0 \
    "reading both/model.safetensors \(model.safetensors.index.json beside it is not read" \
    "$S" train b.ini --force --set model.init_from=both --set train.run_dir=bo
db=$(digest bo/ckpt)
[ "$da" = "$db" ] && t_ok "the single file's weights were read" || t_bad "single file import" "$da vs $db"
mkdir -p pt && cp e32/config.json pt/ && printf 'not a pickle' > pt/pytorch_model.bin
t_exit "pytorch_model.bin alone: only safetensors is read" 66 "pt holds pytorch_model.bin, and spotrain reads only safetensors" \
    "$S" train b.ini --force --set model.init_from=pt --set train.run_dir=p
t_exit "a missing directory" 66 "init_from|config.json" "$S" train b.ini --force --set model.init_from=nowhere --set train.run_dir=m
sed 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' e32/config.json > miss/config.json
t_exit "tied embeddings are refused" 78 "tie_word_embeddings" "$S" train b.ini --force --set model.init_from=miss --set train.run_dir=m

# Exports carry what generate() needs: the source's context length and token
# ids in config.json and generation_config.json (transformers' defaults, 1
# and 2, never stop a DeepSeek model); seq_len may not pass the source's context.
mkdir -p src && cp e32/model.safetensors src/ && /usr/bin/python3 -c "
import json; c = json.load(open('e32/config.json'))
c.update(max_position_embeddings=4096, bos_token_id=5, eos_token_id=[7, 9])
json.dump(c, open('src/config.json', 'w'))"
t_exit "seq_len above the source's max_position_embeddings is refused" 78 \
    "seq_len = 8192 exceeds max_position_embeddings = 4096 of src/config.json" \
    "$S" train b.ini --dry-run --set model.init_from=src --set model.seq_len=8192 --set train.run_dir=s
"$S" train b.ini --quiet --force --set model.init_from=src --set model.seq_len=32 --set train.run_dir=s ||
    t_bad "fine-tune from src"
"$S" ckpt export s -o s-hf >/dev/null || t_bad "export the fine-tune"
ids() { /usr/bin/python3 -c "
import json, sys; c = json.load(open(sys.argv[1] + '/config.json')); g = json.load(open(sys.argv[1] + '/generation_config.json'))
print(c.get('max_position_embeddings'), c.get('bos_token_id'), c.get('eos_token_id'), g.get('bos_token_id'), g.get('eos_token_id'))" "$1" 2>&1; }
got=$(ids s-hf)
[ "$got" = "4096 5 7 5 7" ] && t_ok "a fine-tune's export carries max_position_embeddings and bos/eos ids ($got)" ||
    t_bad "fine-tune export ids" "got '$got', wanted '4096 5 7 5 7'"
# From scratch: the tokenizer's ids (tokenizer_config.json names them), seq_len as the context.
printf '{"eos_token": "!", "bos_token": {"content": "#"}}' > tokenizer_config.json
"$S" ckpt export a -o a-hf >/dev/null || t_bad "export the scratch run"
seq=$(/usr/bin/python3 -c "import json; print(json.load(open('e32/config.json'))['max_position_embeddings'])")
got=$(ids a-hf)
[ "$got" = "$seq 35 33 35 33" ] && t_ok "a scratch run's export carries the tokenizer's ids ($got)" ||
    t_bad "scratch export ids" "got '$got', wanted '$seq 35 33 35 33'"

# The fine-tuning example's lr = 2e-5 with the default min_lr: auto is lr / 10.
t_exit "a fine-tuning lr below 3e-4 with the default min_lr" 0 "train.min_lr = auto: lr / 10 = 2e-06" \
    "$S" train a.ini --dry-run --set train.lr=2e-5 --set train.run_dir=ft

# Once a checkpoint exists, resume does not need init_from: the run's
# resolved config keeps the shape. A fresh start still needs the weights.
cp -r e32 gone
"$S" train b.ini --quiet --force --set model.init_from=gone --set train.run_dir=g || t_bad "train from gone"
rm -rf gone
t_exit "resume after the init_from directory is gone" 0 "resumed .* step 1 of 2" \
    "$S" resume b.ini --set model.init_from=gone --set train.run_dir=g --set train.max_steps=2
t_exit "train from a directory that is gone names it" 66 "model.init_from gone: No such file" \
    "$S" train b.ini --force --set model.init_from=gone --set train.run_dir=g
[ "$(ls g/ckpt)" = "step-00000001
step-00000002" ] && t_ok "the refused train left the run's checkpoints alone" || t_bad "refused train" "$(ls g/ckpt)"

# With a checkpoint, resume takes the shape from it and opens nothing under
# init_from: a garbage config.json, no RUN_DIR/config.ini (a checkpoint
# copied to a new run_dir), then no model.safetensors. lr > 0, so the
# digests say the resumed run continued the uninterrupted one.
cp -r e32 hid
L="--set model.init_from=hid --set train.max_steps=2 --set train.lr=1e-3"
"$S" train b.ini --quiet $L --set train.run_dir=u || t_bad "uninterrupted run from hid"
du=$(digest u/ckpt)
for case in config weights; do
    rm -rf "r$case" && mkdir -p "r$case/ckpt" && cp -r u/ckpt/step-00000001 "r$case/ckpt/"
    if [ $case = config ]; then echo garbage > hid/config.json; else cp e32/config.json hid/ && rm hid/model.safetensors; fi
    t_exit "resume --dry-run with a checkpoint reads no init_from ($case unusable)" 0 "init_from: not read" \
        "$S" resume b.ini $L --set train.run_dir="r$case" --dry-run
    t_exit "resume with a checkpoint reads no init_from ($case unusable)" 0 "resumed .* step 1 of 2" \
        "$S" resume b.ini $L --set train.run_dir="r$case"
    [ -n "$du" ] && [ "$(digest "r$case/ckpt")" = "$du" ] && t_ok "... and continues the run bitwise ($case)" ||
        t_bad "resume without init_from ($case)" "$(digest "r$case/ckpt") vs $du"
done

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import safetensors" 2>/dev/null; then
    out=$("$VENV/bin/python" - <<'PY'
import json, numpy as np
from safetensors.numpy import load_file
idx = json.load(open("esh/model.safetensors.index.json"))
full = load_file("e32/model.safetensors")
got = {}
for f in sorted(set(idx["weight_map"].values())):
    got.update(load_file("esh/" + f))
ok = set(got) == set(full) and all(np.array_equal(got[k], full[k]) for k in full)
ok = ok and idx["metadata"]["total_size"] == sum(v.nbytes for v in full.values())
print("ok" if ok else "bad")
PY
)
    [ "$out" = ok ] && t_ok "the safetensors library reads our files and index" || t_bad "safetensors library" "$out"
else
    echo "SKIP safetensors library check: $VENV lacks safetensors (tests/deps.sh test creates it)"
fi
t_end
