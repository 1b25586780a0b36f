#!/bin/sh
# spotrain data tokenize: the tokenizers library (PyPI, in build/venv made by
# tests/deps.sh) as the oracle for ids on varied text and invalid UTF-8, the
# shard format, validation split, refusals; shards train via source = shards.
# module: tok data
. "$(dirname "$0")/lib.sh"
S=$SPOTRAIN
VENV=${SPOTRAIN_VENV:-$PWD/build/venv}
ORACLE=$PWD/tests/ref/tok_oracle.py
UNIT=$PWD/$BUILD/tests/test_tokenizer
ROOT=$PWD
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

t_exit "--version names the Unicode version of the pre-tokenizer" 0 "^tokenizer: Unicode 16\.0\.0 categories" "$S" --version

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
mkdir adir
t_exit "a directory as input" 66 "adir is a directory" "$S" data tokenize --tokenizer mini.json -o m adir

# ids DIR: the train shard's ids, space-separated (uint16 shards).
ids() {
    /usr/bin/python3 -c "
import struct,sys
d=open(sys.argv[1]+'/train_000000.bin','rb').read(); n=struct.unpack('<i',d[8:12])[0]
print(' '.join(str(x) for x in struct.unpack('<%dH'%n,d[1024:1024+2*n])))" "$1"
}
# Options as getopt_long reads them everywhere: --opt=value, options after the
# inputs, and -- before an input whose name starts with a dash.
cp a.txt ./-dash.txt
t_exit "--opt=value, options after inputs, -- before a dashed name" 0 "wrote 1 train shard" \
    "$S" data tokenize --tokenizer=mini.json --output=eq --shard-tokens=1000 a.txt --force -- -dash.txt
[ "$(ids eq)" = "258 116 257 32 99 97 116 10 258 116 257 32 99 97 116 10" ] && t_ok "both inputs read" ||
    t_bad "getopt inputs" "$(ids eq)"
t_exit "a missing option value is named" 64 "value is missing after '--eos'" "$S" data tokenize a.txt --eos
t_exit "an unknown option is named" 64 "unexpected argument '--nope=1'" "$S" data tokenize --nope=1 a.txt

# JSON lines by content and by name in any case, gzip, a BOM, lone surrogates.
printf '{"text": "the cat"}\n{"text": "hello there"}\n' > two.jsonl
"$S" data tokenize --tokenizer mini.json -o two two.jsonl 2>/dev/null
two=$(ids two)
[ "$(echo "$two" | tr ' ' '\n' | grep -c '^258$')" = 2 ] && t_ok "JSON lines: two documents" || t_bad "two.jsonl" "$two"
cp two.jsonl TWO.JSONL
t_exit "upper-case .JSONL is JSON lines" 0 "" "$S" data tokenize --tokenizer mini.json -o up TWO.JSONL
[ "$(ids up)" = "$two" ] && t_ok ".JSONL ids" || t_bad ".JSONL ids" "$(ids up)"
cp two.jsonl two.json
t_exit "a .json file of JSON lines is read as JSON lines (said once)" 0 "two.json: reading as JSON lines" \
    "$S" data tokenize --tokenizer mini.json -o js2 two.json
[ "$(ids js2)" = "$two" ] && t_ok ".json of JSON lines: ids" || t_bad ".json ids" "$(ids js2)"
printf '[{"text": "the cat"}]\n' > arr.json
t_exit "a .json file that is not JSON lines is refused" 65 "arr.json: a .json file.*--format text" \
    "$S" data tokenize --tokenizer mini.json -o arr arr.json
gzip -c two.jsonl > two.jsonl.gz
t_exit "gzip JSON lines" 0 "" "$S" data tokenize --tokenizer mini.json -o gz two.jsonl.gz
[ "$(ids gz)" = "$two" ] && t_ok ".jsonl.gz ids equal the plain file's" || t_bad ".jsonl.gz ids" "$(ids gz)"
gzip -c a.txt | "$S" data tokenize --tokenizer mini.json -o gzin - 2>/dev/null
[ "$(ids gzin)" = "258 116 257 32 99 97 116 10" ] && t_ok "gzip on standard input" || t_bad "gzip stdin" "$(ids gzin)"
head -c 20 two.jsonl.gz > cut.jsonl.gz
t_exit "truncated gzip refused" 65 "cut.jsonl.gz: corrupt or truncated gzip" \
    "$S" data tokenize --tokenizer mini.json -o cut cut.jsonl.gz
printf '\357\273\277' | cat - two.jsonl > bom.jsonl
t_exit "a BOM before the first JSON line is skipped" 0 "" "$S" data tokenize --tokenizer mini.json -o bom bom.jsonl
[ "$(ids bom)" = "$two" ] && t_ok "BOM: same ids" || t_bad "BOM ids" "$(ids bom)"
printf '{"text": "a\\ud800b \\ud83d\\ude00 \\\\ud800"}\n' > sur.jsonl
t_exit "lone surrogate escapes are counted" 0 "sur.jsonl: 1 lone surrogate escape .*line 1.*U\+FFFD" \
    "$S" data tokenize --tokenizer mini.json -o sur sur.jsonl

# Special-token text inside a document: the special id by default (as the
# library does), counted; --special-as-text encodes it as text.
printf 'he<|endoftext|>he' > sp.txt
t_exit "special-token text in a document is counted" 0 "1 special-token literal .*--special-as-text" \
    "$S" data tokenize --tokenizer mini.json -o sp sp.txt
[ "$(ids sp)" = "258 257 258 257" ] && t_ok "by default it is the special id" || t_bad "special id" "$(ids sp)"
t_exit "--special-as-text" 0 "encoded 1 special-token literal .*as plain text" \
    "$S" data tokenize --tokenizer mini.json --special-as-text -o spt sp.txt
[ "$(ids spt)" = "258 257 60 124 101 110 100 111 102 116 101 120 116 124 62 257" ] &&
    t_ok "--special-as-text: byte-level text ids" || t_bad "special as text" "$(ids spt)"

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
# The case folding comes from the generating Python's own tables: compare
# only under the Unicode version the header names for it.
fold=$(sed -n 's/^#define UNI_FOLD_VERSION "\(.*\)"$/\1/p' "$ROOT/tok/unicode_tab.h")
if ! "$VENV/bin/python" -c "import unicodedata, sys; sys.exit(unicodedata.unidata_version != '$fold')"; then
    echo "SKIP unicode table check: $VENV's Python has other case tables than Unicode $fold"
elif "$VENV/bin/python" -c "import unicodedata2" 2>/dev/null; then
    (cd "$ROOT" && "$VENV/bin/python" tools/gen_unicode.py) > unicode_tab.h 2>gen.err &&
        cmp -s unicode_tab.h "$ROOT/tok/unicode_tab.h" && t_ok "tok/unicode_tab.h is what tools/gen_unicode.py writes" ||
        t_bad "tok/unicode_tab.h differs from tools/gen_unicode.py's output" "$(cat gen.err)"
else
    echo "SKIP unicode table check: $VENV lacks unicodedata2 (tests/requirements.txt)"
fi
"$VENV/bin/python" "$ORACLE" make oracle || t_bad "oracle: train tokenizers"
for n in gpt2 strmerges prefix deepseek v3 llama3 qwen2; do
    eos=$("$VENV/bin/python" -c "import json; j=json.load(open('oracle/$n.json')); print([a['id'] for a in j['added_tokens'] if 'end' in a['content']][0])")
    if "$S" data tokenize --tokenizer "oracle/$n.json" -o "o_$n" oracle/texts.jsonl oracle/bad_*.bin 2>err.txt; then
        out=$("$VENV/bin/python" "$ORACLE" check oracle "$n" "o_$n/train_000000.bin" "$eos" 2>&1)
        case "$out" in same*) t_ok "ids equal tokenizers' encode: $n ($out)" ;; *) t_bad "ids vs tokenizers: $n" "$out" ;; esac
    else
        t_bad "tokenize with $n" "$(cat err.txt)"
    fi
done
for n in gpt2 deepseek v3; do
    eos=$("$VENV/bin/python" -c "import json; j=json.load(open('oracle/$n.json')); print([a['id'] for a in j['added_tokens'] if 'end' in a['content']][0])")
    if "$S" data tokenize --tokenizer "oracle/$n.json" --special-as-text -o "t_$n" oracle/texts.jsonl oracle/bad_*.bin \
        2>err.txt; then
        out=$("$VENV/bin/python" "$ORACLE" check oracle "$n" "t_$n/train_000000.bin" "$eos" special-as-text 2>&1)
        case "$out" in same*) t_ok "--special-as-text equals encode_special_tokens: $n" ;; *) t_bad "--special-as-text: $n" "$out" ;; esac
    else
        t_bad "tokenize with $n --special-as-text" "$(cat err.txt)"
    fi
done
# add_prefix_space adds a space, so decode(encode(x)) == " " + x there; the others round-trip.
out=$("$UNIT" oracle/gpt2.json oracle/strmerges.json oracle/deepseek.json oracle/v3.json oracle/llama3.json \
    oracle/qwen2.json 2>&1)
echo "$out" | grep -q "^0 failed\|, 0 failed" && t_ok "decode(encode(x)) == x on random bytes, trained tokenizers" ||
    t_bad "round trip" "$(echo "$out" | tail -n 3)"
t_end
