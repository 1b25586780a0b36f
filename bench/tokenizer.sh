#!/bin/sh
# Tokenizer encode speed on one core: spotrain's byte-level BPE against the
# tokenizers library (its Rust encoder, one thread) on the same text and the
# same GPT-2-style tokenizer.json (16k vocabulary, trained here on the text).
# Needs build/venv (tests/deps.sh test) for training the tokenizer.
BUILD=${BUILD:-build}
VENV=${SPOTRAIN_VENV:-build/venv}
BIN="$BUILD/bench/bench_tok"
if [ ! -x "$BIN" ]; then
    echo "tokenizer: $BIN is missing; run make bench" >&2
    exit 66
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import tokenizers" 2>/dev/null; then
    echo "tokenizer: skipped ($VENV lacks the tokenizers package; sh tests/deps.sh test makes it)"
    exit 0
fi
tmp=$(mktemp -d /tmp/spotrain-bench-tok.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# About 8 MB of prose and code: licences, the README and docs/, our sources, repeated.
for i in 1 2 3 4 5 6 7 8; do
    cat /usr/share/common-licenses/* README.md docs/*.md train/*.c ckpt/*.c 2>/dev/null
done > "$tmp/text.txt"
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$VENV/bin/python" - "$tmp" <<'PY'
import sys, time
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
d = sys.argv[1]
text = open(d + "/text.txt", encoding="utf-8", errors="replace").read()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator([text[:2000000]], trainers.BpeTrainer(vocab_size=16000, show_progress=False,
                        special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save(d + "/tok.json")
docs, at = [], 0
while at < len(text):
    end = text.find("\n", at + 65536)
    end = len(text) if end < 0 else end + 1
    docs.append(text[at:end]); at = end
best = 0
for _ in range(3):
    tok2 = Tokenizer.from_file(d + "/tok.json")   # cold cache each pass, like ours' first
    t0 = time.perf_counter()
    for s in docs:
        tok2.encode(s, add_special_tokens=False)
    best = max(best, len(text.encode()) / 1e6 / (time.perf_counter() - t0))
print("tokenizers %s encode: %.1f MB/s on one core (RAYON_NUM_THREADS=1, best of 3)" % (__import__("tokenizers").__version__, best))
PY
"$BIN" "$tmp/tok.json" "$tmp/text.txt" 3
