#!/usr/bin/python3
# Float64 PyTorch reference for tests/unit/test_attn.c: causal attention with
# grouped K/V heads from the same fused q | k | v rows the CPU backend uses,
# its output, per-row log-sum-exp and the q, k, v gradients for a given
# upstream gradient.
#
# usage: attn_torch.py CASE_DIR...   (each holding case.txt, qkv.bin, do.bin;
# writes ref_o.bin, ref_lse.bin, ref_dqkv.bin as float64)
# module: backend
import math
import os
import sys

import torch


def run_case(d):
    c = {}
    with open(os.path.join(d, "case.txt")) as f:
        for line in f:
            k, v = line.split("=", 1)
            c[k.strip()] = int(v)
    B, T, H, KV, hd = c["B"], c["T"], c["H"], c["KV"], c["hd"]
    ld = (H + 2 * KV) * hd

    def load(name, cols):
        raw = open(os.path.join(d, name), "rb").read()
        return torch.frombuffer(bytearray(raw), dtype=torch.float32).to(torch.float64).view(B, T, cols)

    qkv = load("qkv.bin", ld).requires_grad_(True)
    dout = load("do.bin", H * hd)
    q = qkv[..., :H * hd].view(B, T, H, hd).transpose(1, 2)
    k = qkv[..., H * hd:(H + KV) * hd].view(B, T, KV, hd).transpose(1, 2)
    v = qkv[..., (H + KV) * hd:].view(B, T, KV, hd).transpose(1, 2)
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, H * hd)
    o.backward(dout)
    o.detach().numpy().tofile(os.path.join(d, "ref_o.bin"))
    lse.detach().numpy().tofile(os.path.join(d, "ref_lse.bin"))
    qkv.grad.numpy().tofile(os.path.join(d, "ref_dqkv.bin"))


def main():
    torch.set_num_threads(1)
    for d in sys.argv[1:]:
        run_case(d)


if __name__ == "__main__":
    main()
