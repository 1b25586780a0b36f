#!/usr/bin/env python3
# PyTorch eager on one GPU, for tests/device_check.sh: the same decoder as
# spotrain (RMSNorm, split-half RoPE, GQA, SwiGLU, untied lm_head), fp32
# master weights with bf16 autocast, AdamW, global-norm clip; and the
# measured bf16 GEMM ceiling. Prints one `key value` per line.
#   python3 bench/torch_gpu.py gemm [N]
#   python3 bench/torch_gpu.py train DIM LAYERS HEADS KV FFN VOCAB SEQ BATCH STEPS
# --device cpu (anywhere): the DC_EMU=1 rehearsal of device_check.sh runs
# the same code on the CPU with a tiny model to prove the script's parsing;
# its numbers measure nothing.
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm(x, w, eps=1e-6):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * w).to(x.dtype)


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def attention(q, k, v, group):
    if not hasattr(F, "scaled_dot_product_attention"):
        # torch < 2.0 (Debian's 1.13, which the CPU rehearsal uses): the same
        # causal attention written out; a GPU machine's torch never gets here.
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        T = q.shape[-2]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        return torch.softmax(s.float(), dim=-1).to(v.dtype) @ v
    # enable_gqa only where needed: torch 2.0-2.4 lack the keyword.
    kw = {"enable_gqa": True} if group > 1 else {}
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class Block(nn.Module):
    def __init__(self, dim, heads, kv, ffn):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv, dim // heads
        self.q = nn.Linear(dim, heads * self.hd, bias=False)
        self.k = nn.Linear(dim, kv * self.hd, bias=False)
        self.v = nn.Linear(dim, kv * self.hd, bias=False)
        self.o = nn.Linear(heads * self.hd, dim, bias=False)
        self.gate = nn.Linear(dim, ffn, bias=False)
        self.up = nn.Linear(dim, ffn, bias=False)
        self.down = nn.Linear(ffn, dim, bias=False)
        self.n1 = nn.Parameter(torch.ones(dim))
        self.n2 = nn.Parameter(torch.ones(dim))

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = norm(x, self.n1)
        q = self.q(h).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        o = attention(q, k, v, self.h // self.kv)
        x = x + self.o(o.transpose(1, 2).reshape(B, T, -1))
        h = norm(x, self.n2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, dim, layers, heads, kv, ffn, vocab, seq):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, kv, ffn) for _ in range(layers))
        self.nf = nn.Parameter(torch.ones(dim))
        self.head = nn.Linear(dim, vocab, bias=False)
        hd = dim // heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(seq).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())

    def forward(self, inp, tgt):
        x = self.emb(inp)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.head(norm(x, self.nf))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), tgt.reshape(-1))


def gemm_ceiling(device, n):
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    dt = (time.perf_counter() - t0) / reps
    print("gemm_bf16_tflops %.1f" % (2.0 * n ** 3 / dt / 1e12))


def train(device, dim, layers, heads, kv, ffn, vocab, seq, batch, steps):
    torch.manual_seed(0)
    model = Model(dim, layers, heads, kv, ffn, vocab, seq).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator(device=device).manual_seed(1)
    warm = 3
    for s in range(warm + steps):
        if s == warm:
            sync(device)
            t0 = time.perf_counter()
        tok = torch.randint(0, vocab, (batch, seq + 1), device=device, generator=g)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(tok[:, :-1], tok[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    print("torch_version %s" % torch.__version__)
    print("torch_attention %s" % ("SDPA" if hasattr(F, "scaled_dot_product_attention") else "written-out"))
    print("torch_tokens_per_s %.0f" % (batch * seq / dt))
    print("torch_ms_per_step %.1f" % (dt * 1e3))
    if device == "cuda":   # no counterpart on the CPU: the caller shows "?"
        print("torch_peak_gib %.2f" % (torch.cuda.max_memory_allocated() / 2 ** 30))
    print("torch_last_loss %.4f" % float(loss))


if __name__ == "__main__":
    args, dev = sys.argv[1:], "cuda"
    if "--device" in args:
        i = args.index("--device")
        dev = args[i + 1]
        del args[i:i + 2]
    if args[0] == "gemm":
        gemm_ceiling(dev, int(args[1]) if len(args) > 1 else 8192)
    else:
        train(dev, *[int(x) for x in args[1:10]])
