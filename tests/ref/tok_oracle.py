#!/usr/bin/env python3
# The tokenizers library as the oracle for spotrain's tokenizer:
#   make DIR    trains small byte-level BPEs (GPT-2 style, DeepSeek-LLM style
#               Split sequence, DeepSeek-V3 style, Llama 3 and Qwen2 patterns
#               with (?i:...), prefix space, "a b" merges)
#               and writes DIR/<name>.json, DIR/texts.jsonl, DIR/bad_*.bin
#   check DIR NAME SHARD EOS [special-as-text]   the shard must hold
#               [EOS] + encode(doc) for each document of texts.jsonl then each
#               bad_*.bin, in order (with encode_special_tokens set: special
#               tokens' text encoded as text)
# module: tok
import json, os, random, sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2026; we've got 1234567 tokens!",
    "Don't stop. I'll go, you'd say, they're here, she's done, I'm fine, we'll see.",
    "东京是日本的首都。北京是中国的首都。我们喜欢机器学习和大语言模型。",
    "Привет, мир! Как дела? Ελληνικά γράμματα και αριθμοί 3.14159.",
    "def main():\n    return [x ** 2 for x in range(10)]  # squares\n\n\n",
    "emoji 😀🚀✨ and symbols ©®™ ±×÷ €£¥ → ← ∑∫√ ½¾ ① ② ③",
    "Tabs\tand   multiple    spaces   \r\n  windows line endings\r\n",
    "हिन्दी भाषा में संख्याएँ १२३ और العربية ١٢٣ 한국어 텍스트 カタカナ ひらがな",
] * 20

DS_LETTERS = "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕＡ-Ｚａ-ｚ𐐀-𐑏𞤀-𞥃]+"

V3_PATTERN = ("[\\r\\n]|\\s?[^\\r\\n\\p{L}\\p{P}\\p{S}\\p{N}]?[\\p{L}\\p{M}]+|\\s?[\\p{P}\\p{S}]+[\\r\\n]*"
              "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


LLAMA3_PATTERN = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
                  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace("\\p{N}{1,3}", "\\p{N}")

# Characters the tokenizers wheel's regex engine classifies by Unicode 16.0:
# new in 15.0 (U+1FAE8 So, U+1E4D0 Lo), 15.1 (U+2FFC So, U+31350 Lo) and 16.0
# (U+1C89 Lu, U+1FAE9 So, U+10D50 Lu, U+1CC00 So); U+20C1 (17.0) is still
# unassigned there.
NEW_UNICODE = ["\U0001FAE8", "\U0001E4D0", "\u2FFC", "\U00031350", "\u1C89", "\U0001FAE9", "\U00010D50",
               "\U0001CC00", "\u20C1"]
# Case folding that (?i:'s|...) sees: long s, Kelvin sign, sharp s, ligatures.
FOLDS = ["'S", "'\u017f", "'LL", "'Re", "'VE", "'D", "'M", "'T", "'\u00df", "'\ufb05", "\u212a", "'\u1e97"]


def train(pre, specials, prefix_space=False):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, tr)
    tok.add_tokens(["machine learning"])  # an added token that is not special
    return tok


def make(d):
    os.makedirs(d, exist_ok=True)
    toks = {
        "gpt2": train(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"]),
        "prefix": train(pre_tokenizers.ByteLevel(add_prefix_space=True), ["<|endoftext|>"]),
        "deepseek": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex("[\r\n]"), "isolated"),
            pre_tokenizers.Split(Regex(DS_LETTERS), "isolated"),
            pre_tokenizers.Split(Regex("\\s?[!-/:-~！-／：-～‘-‟　-。]+"), "isolated"),
            pre_tokenizers.Split(Regex("\\s+$"), "isolated"),
            pre_tokenizers.Split(Regex("[一-龥ࠀ-一가-퟿]+"), "isolated"),
            pre_tokenizers.Split(Regex("\\p{N}+"), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]),
        "v3": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex("\\p{N}{1,3}"), "isolated"),
            pre_tokenizers.Split(Regex("[一-龥\u3040-ゟ゠-ヿ]+"), "isolated"),
            pre_tokenizers.Split(Regex(V3_PATTERN), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            ["<｜end▁of▁sentence｜>"]),
        "llama3": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            ["<|begin_of_text|>", "<|end_of_text|>"]),
        "qwen2": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
            ["<|endoftext|>"]),
    }
    for name, tok in toks.items():
        tok.save(os.path.join(d, name + ".json"))
    # The same GPT-2 tokenizer with merges in the older "a b" string form.
    j = json.load(open(os.path.join(d, "gpt2.json"), encoding="utf-8"))
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    json.dump(j, open(os.path.join(d, "strmerges.json"), "w", encoding="utf-8"), ensure_ascii=False)
    rng = random.Random(7)
    pool = (list("abcXYZ019 '\t\n\r.,!?-_") + list("éüßñøµ") + list("Жжπλ东京日本") + list("١٢३४") +
            ["😀", "🚀", "\u00a0", "\u2003", "\u3000", "\u0301", "\u200b", "\x1c", "\x85", "  ", "'s", "'ll",
             "<|endoftext|>", "<｜end▁of▁sentence｜>", "machine learning", "ｆｕｌｌ", "①", "½"] + NEW_UNICODE + FOLDS)
    texts = list(CORPUS[:8]) + ["", " ", "   ", "\n\n\n", "a", "don't", "  leading and trailing  ",
                                "x" * 3000, " " * 500 + "y", "1" * 40, "<|endoftext|><|endoftext|>",
                                "hello<|endoftext|>world", "machine learning machine learning",
                                " \U0001FAE8", "I'M SURE IT'S \u1C89\U00010D50 \u2FFC\U00031350 \U0001FAE9\U0001CC00",
                                "".join(FOLDS)]
    for _ in range(400):
        texts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 60))))
    with open(os.path.join(d, "texts.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    bad = [b"ab\xff\xfecd", b"caf\xc3", b"\x80\x81 x \xc3\xa9\xe2\x82", b"don\xffit 12\xfe34 \xed\xa0\x80",
           bytes(range(256)), bytes(rng.randrange(256) for _ in range(2000))]
    for i, b in enumerate(bad):
        open(os.path.join(d, "bad_%02d.bin" % i), "wb").write(b)


def encode_bytes(tok, b):
    """Our documented rule for bytes that are not UTF-8: each such byte is a
    character of category Cn. The library only takes str, so each invalid byte
    becomes U+0378 (unassigned, Cn) for its pre-tokenizer; the pieces are then
    mapped back to the original bytes and run through its BPE model."""
    if getattr(tok.pre_tokenizer, "add_prefix_space", False) and not b.startswith(b" "):
        b = b" " + b   # ByteLevel's add_prefix_space, on the one segment
    chars, spans, i = [], [], 0
    while i < len(b):
        for n in (1, 2, 3, 4):
            try:
                c = b[i:i + n].decode("utf-8")
                if len(c) == 1:
                    break
            except UnicodeDecodeError:
                c = None
        else:
            c = None
        if c is None:
            chars.append("\u0378"), spans.append((i, i + 1))
            i += 1
        else:
            chars.append(c), spans.append((i, i + len(c.encode("utf-8"))))
            i += len(c.encode("utf-8"))
    text = "".join(chars)
    table = pre_tokenizers.ByteLevel.alphabet()
    order = [b for b in range(256)]
    m = {}
    n = 0
    for x in order:
        keep = (33 <= x <= 126) or (0xA1 <= x <= 0xAC) or (0xAE <= x <= 0xFF)
        m[x] = chr(x) if keep else chr(256 + n)
        n += 0 if keep else 1
    assert set(m.values()) == set(table)
    ids = []
    # Added tokens cannot occur in these inputs; pre-tokenize, then BPE.
    for _, (s, e) in tok.pre_tokenizer.pre_tokenize_str(text):
        raw = b"".join(b[spans[k][0]:spans[k][1]] for k in range(s, e))
        ids += [t.id for t in tok.model.tokenize("".join(m[x] for x in raw))]
    return ids


def check(d, name, shard, eos, as_text=False):
    tok = Tokenizer.from_file(os.path.join(d, name + ".json"))
    tok.encode_special_tokens = as_text
    docs = [json.loads(l)["text"] for l in open(os.path.join(d, "texts.jsonl"), encoding="utf-8")]
    want = []
    for t in docs:
        want += [eos] + tok.encode(t, add_special_tokens=False).ids
    bads = sorted(f for f in os.listdir(d) if f.startswith("bad_"))
    for f in bads:
        want += [eos] + encode_bytes(tok, open(os.path.join(d, f), "rb").read())
    raw = open(shard, "rb").read()
    hdr = [int.from_bytes(raw[4 * i:4 * i + 4], "little", signed=True) for i in range(3)]
    width = 2 if hdr[0] == 20240520 else 4
    got = [int.from_bytes(raw[1024 + width * i:1024 + width * (i + 1)], "little") for i in range(hdr[2])]
    if got == want:
        print("same ids: %d documents, %d tokens" % (len(docs) + len(bads), len(want)))
        return 0
    k = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
    print("MISMATCH at token %d of %d/%d: got %s want %s" % (k, len(got), len(want), got[k:k + 8], want[k:k + 8]))
    # Locate the document.
    pos = 0
    for t in docs:
        n = 1 + len(tok.encode(t, add_special_tokens=False).ids)
        if pos + n > k:
            print("document %r" % t[:200])
            print("pieces %r" % tok.pre_tokenizer.pre_tokenize_str(t)[:20])
            break
        pos += n
    return 1


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                       sys.argv[6:] == ["special-as-text"]))
