#!/bin/sh
# spotrain data tokenize: the tokenizers library (PyPI, in build/venv made by
# tests/deps.sh) as the oracle for ids on varied text and invalid UTF-8, the
# shard format, validation split, refusals; shards train via source = shards.
. "$(dirname "$0")/lib.sh"
S=$SPOTRAIN
VENV=${SPOTRAIN_VENV:-$PWD/build/venv}
ORACLE=$PWD/tests/ref/tok_oracle.py
UNIT=$PWD/$BUILD/tests/test_tokenizer
cd "$T_TMP" || exit 1

# A hand-made tokenizer (stdlib Python only): 256 byte symbols, two merges.
/usr/bin/python3 - <<'PY'
import json
m, n = {}, 0
for b in range(256):
    keep = 33 <= b <= 126 or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF
    m[b] = chr(b) if keep else chr(256 + n)
    n += 0 if keep else 1
vocab = {m[b]: b for b in range(256)}
vocab.update({"\u0120t": 256, "he": 257})
j = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
     "added_tokens": [{"id": 258, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                       "rstrip": False, "normalized": False, "special": True}],
     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
     "post_processor": None, "decoder": {"type": "ByteLevel"},
     "model": {"type": "BPE", "vocab": vocab, "merges": ["\u0120 t", "h e"]}}
json.dump(j, open("mini.json", "w"))
j["normalizer"] = {"type": "NFKC"}
json.dump(j, open("nfkc.json", "w"))
j["normalizer"] = None
j["added_tokens"] = []
json.dump(j, open("noeos.json", "w"))
PY

printf 'the cat\n' > a.txt
printf 'hello there' > b.txt
t_exit "tokenize two text files" 0 "wrote 1 train shard" "$S" data tokenize --tokenizer mini.json -o out a.txt b.txt
# [eos] t he Ġ c a t \n [eos] he l l o Ġt he r e
got=$(/usr/bin/python3 -c "
import struct,sys
d=open('out/train_000000.bin','rb').read(); h=struct.unpack('<3i',d[:12])
print(h[0],h[1],h[2],' '.join(str(x) for x in struct.unpack('<%dH'%h[2],d[1024:])))")
want="20240520 1 17 258 116 257 32 99 97 116 10 258 257 108 108 111 256 257 114 101"
[ "$got" = "$want" ] && t_ok "shard header and ids (uint16, eos before each document)" || t_bad "shard ids" "got $got"
t_exit "refuses to overwrite shards" 64 "already holds shards.*--force" "$S" data tokenize --tokenizer mini.json -o out a.txt
t_exit "--force overwrites" 0 "" "$S" data tokenize --tokenizer mini.json --force -o out b.txt
[ ! -e out/train_000001.bin ] && [ ! -e out/val_000000.bin ] && t_ok "no stale shards left" || t_bad "stale shards"
printf 'from stdin' | "$S" data tokenize --tokenizer mini.json -o stdin - 2>/dev/null
[ -s stdin/train_000000.bin ] && t_ok "reads standard input" || t_bad "stdin"

/usr/bin/python3 -c "
import json
with open('docs.jsonl','w') as f:
    for i in range(200): f.write(json.dumps({'text': 'document %d: the theme of the day is %s' % (i, 'x'*(i%7))})+'\n')
"
t_exit "jsonl with a validation split" 0 "val shard" "$S" data tokenize --tokenizer mini.json --val-fraction 0.1 --shard-tokens 2000 -o js docs.jsonl
ntrain=$(ls js/train_*.bin | wc -l)
[ "$ntrain" -gt 1 ] && [ -e js/val_000000.bin ] && t_ok "several train shards and a val shard ($ntrain)" || t_bad "shard split" "$(ls js)"
# Whole documents: every val document starts with eos and val holds 20 of them.
nval=$(/usr/bin/python3 -c "
import struct
d=open('js/val_000000.bin','rb').read(); n=struct.unpack('<i',d[8:12])[0]
t=struct.unpack('<%dH'%n,d[1024:]); print(sum(1 for x in t if x==258), t[0])")
[ "$nval" = "20 258" ] && t_ok "validation takes whole documents (20 of 200)" || t_bad "val docs" "$nval"
printf '{"text": "ok"}\nnot json\n' > bad.jsonl
t_exit "a bad JSON line is named" 65 "bad.jsonl:2:" "$S" data tokenize --tokenizer mini.json -o bj bad.jsonl
t_exit "normalizer refused by name" 78 "normalizer NFKC is not supported" "$S" data tokenize --tokenizer nfkc.json -o n a.txt
t_exit "no end-of-text token: asks for --eos" 64 "pass --eos" "$S" data tokenize --tokenizer noeos.json -o n a.txt
t_exit "--eos overrides" 0 "" "$S" data tokenize --tokenizer noeos.json --eos 10 -o n a.txt
t_exit "missing input" 66 "cannot open" "$S" data tokenize --tokenizer mini.json -o m nope.txt

# The shards train through [data] source = shards.
cat > tr.ini <<EOF
[model]
vocab_size = 259
seq_len = 16
[data]
source = shards
train_path = js/train_*.bin
val_path = js/val_*.bin
tokenizer = mini.json
[train]
run_dir = run
max_steps = 3
global_batch = 4
micro_batch = 4
val_every = 3
[checkpoint]
interval_steps = 3
EOF
t_exit "shards train (source = shards)" 0 "" "$S" train tr.ini --quiet
t_exit "sample encodes a text prompt and decodes text" 0 "^the theme" "$S" sample tr.ini --prompt "the theme" --tokens 4
# Without a tokenizer a shard model prints ids in the same shape: prompt, then continuation.
sed -e 's/^tokenizer = .*//' -e 's/^run_dir = run/run_dir = run2/' tr.ini > tr2.ini
"$S" train tr2.ini --quiet || t_bad "train without a tokenizer"
t_exit "sample of a shard model without a tokenizer: prompt ids, then continuation ids" 0 "^5 6 7( [0-9]+){3}$" \
    "$S" sample tr2.ini --prompt "5 6 7" --tokens 3

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import tokenizers" 2>/dev/null; then
    echo "SKIP tokenizers oracle: $VENV lacks the tokenizers package (tests/deps.sh test creates it)"
    t_end
    exit
fi
"$VENV/bin/python" "$ORACLE" make oracle || t_bad "oracle: train tokenizers"
for n in gpt2 strmerges prefix deepseek v3; do
    eos=$("$VENV/bin/python" -c "import json; j=json.load(open('oracle/$n.json')); print([a['id'] for a in j['added_tokens'] if 'end' in a['content']][0])")
    if "$S" data tokenize --tokenizer "oracle/$n.json" -o "o_$n" oracle/texts.jsonl oracle/bad_*.bin 2>err.txt; then
        out=$("$VENV/bin/python" "$ORACLE" check oracle "$n" "o_$n/train_000000.bin" "$eos" 2>&1)
        case "$out" in same*) t_ok "ids equal tokenizers' encode: $n ($out)" ;; *) t_bad "ids vs tokenizers: $n" "$out" ;; esac
    else
        t_bad "tokenize with $n" "$(cat err.txt)"
    fi
done
# add_prefix_space adds a space, so decode(encode(x)) == " " + x there; the others round-trip.
out=$("$UNIT" oracle/gpt2.json oracle/strmerges.json oracle/deepseek.json oracle/v3.json 2>&1)
echo "$out" | grep -q "^0 failed\|, 0 failed" && t_ok "decode(encode(x)) == x on random bytes, trained tokenizers" ||
    t_bad "round trip" "$(echo "$out" | tail -n 3)"
t_end
