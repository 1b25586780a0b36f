#!/usr/bin/python3
# Independent check of `spotrain ckpt export`: parses model.safetensors by
# its spec (u64 header length, JSON header padded to 8 bytes, contiguous
# data_offsets), rebuilds the model from config.json with the float64
# reference of tests/ref/ref_torch.py, and prints a greedy continuation of a
# byte prompt, to compare with `spotrain sample`.
# usage: export_check.py DIR PROMPT NTOKENS
# module: hf
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_torch  # noqa: E402


def load_safetensors(path):
    raw = open(path, "rb").read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen % 8 or 8 + hlen > len(raw):
        raise SystemExit("export_check: header length %d is not a multiple of 8 or overruns the file" % hlen)
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    if header.get("__metadata__", {}).get("format") != "pt":
        raise SystemExit("export_check: __metadata__.format is not 'pt'")
    data = raw[8 + hlen:]
    tensors, spans = {}, []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit("export_check: %s has dtype %s" % (name, t["dtype"]))
        a, b = t["data_offsets"]
        n = 1
        for d in t["shape"]:
            n *= d
        if b - a != 4 * n:
            raise SystemExit("export_check: %s spans %d bytes for shape %s" % (name, b - a, t["shape"]))
        spans.append((a, b))
        flat = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).to(torch.float64)
        tensors[name] = flat.view(*t["shape"])
    spans.sort()
    pos = 0
    for a, b in spans:
        if a != pos:
            raise SystemExit("export_check: tensor data has a hole or overlap at byte %d" % a)
        pos = b
    if pos != len(data):
        raise SystemExit("export_check: %d trailing bytes after the tensors" % (len(data) - pos))
    return tensors


def main():
    out, prompt, ntok = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(os.path.join(out, "config.json")))
    if cfg.get("architectures") != ["LlamaForCausalLM"] or cfg.get("tie_word_embeddings"):
        raise SystemExit("export_check: config.json is not an untied LlamaForCausalLM")
    c = {"dim": cfg["hidden_size"], "n_heads": cfg["num_attention_heads"],
         "n_kv_heads": cfg["num_key_value_heads"], "n_layers": cfg["num_hidden_layers"],
         "norm_eps": cfg["rms_norm_eps"], "rope_theta": cfg["rope_theta"]}
    P = load_safetensors(os.path.join(out, "model.safetensors"))
    want = ref_torch.expected_shapes(dict(c, ffn_dim=cfg["intermediate_size"], vocab=cfg["vocab_size"]))
    if set(P) != set(want) or any(tuple(P[k].shape) != tuple(want[k]) for k in want):
        raise SystemExit("export_check: tensor names or shapes differ from LlamaForCausalLM's")
    ids = list(prompt.encode())
    with torch.no_grad():
        for _ in range(ntok):
            logits = ref_torch.logits_last(P, c, torch.tensor(ids, dtype=torch.int64))
            ids.append(int(torch.argmax(logits)))
    sys.stdout.write(bytes(ids).decode("latin-1"))


main()
