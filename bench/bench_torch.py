#!/usr/bin/python3
# PyTorch eager equivalent of bench/bench_step.c: the same two models, the
# same step (fwd + bwd + global-norm clip + AdamW, one micro-batch of 8 x 256),
# best over thread settings. Prints the same fields for side by side.
# Each setting runs in a fresh process with OMP_NUM_THREADS, MKL_NUM_THREADS
# and OPENBLAS_NUM_THREADS set to its count: torch's pools are sized when it
# starts, and torch.set_num_threads(1) alone still keeps two cores busy (the
# "old style" line shows that run too, for comparison). BENCH_PIN1=1 pins the
# 1-thread process to one CPU (what bench/throughput.sh does for spotrain too).
# BENCH_REPEAT runs each setting that many times and keeps the fastest, as
# bench/throughput.sh does for spotrain: both sides get the same luck.
# Usage: bench_torch.py [SCALE [MODEL]]
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The parent runs no torch op (its pools are never started): only children.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = norm(x, self.n1)
        q = self.q(h).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(self.h // self.kv, dim=1)
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd)) + mask
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.o(o)
        h = norm(x, self.n2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def norm(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


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
        self.register_buffer("mask", torch.full((seq, seq), float("-inf")).triu(1))

    def forward(self, inp, tgt):
        x = self.emb(inp)
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        logits = self.head(norm(x, self.nf))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.reshape(-1))


def flops_per_token(dim, layers, heads, kv, ffn, vocab, seq):
    hd = dim // heads
    per_layer = dim * heads * hd * 2 + 2 * dim * kv * hd + 3 * dim * ffn
    n = layers * per_layer + vocab * dim
    return 6.0 * n + 6.0 * layers * seq * heads * hd


def run(name, shape, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dim, layers, heads, kv, ffn, vocab, seq = shape
    model = Model(*shape)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    t0 = None
    for s in range(2 + steps):
        if s == 2:
            t0, c0 = time.perf_counter(), time.process_time()
        tok = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = model(tok[:, :-1], tok[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    tps = batch * seq / dt
    return tps, dt, flops_per_token(*shape) * tps / 1e9, batch * seq / cpu, float(loss)


MODELS = {"A": ((256, 4, 8, 4, 704, 256, 256), 8, 10),
          "B": ((512, 8, 8, 4, 1408, 8192, 256), 8, 4)}


def child(name, threads, scale):
    shape, batch, steps = MODELS[name]
    tps, dt, gf, tcpu, loss = run(name, shape, batch, steps * scale, threads)
    print("RESULT %s %d %.3f %.6f %.3f %.3f %.4f" % (name, threads, tps, dt, gf, tcpu, loss), flush=True)


def spawn(name, threads, scale, honest, pin):
    env = dict(os.environ)
    for v in THREAD_VARS:
        if honest:
            env[v] = str(threads)
        else:
            env.pop(v, None)
    pre = None
    if pin:
        cpu = min(os.sched_getaffinity(0))
        pre = lambda: os.sched_setaffinity(0, {cpu})
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, str(threads), str(scale)],
                         env=env, preexec_fn=pre, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            f = line.split()
            return float(f[3]), float(f[4]), float(f[5]), float(f[6]), float(f[7])
    sys.stderr.write("pytorch   model %s at %d thread(s) failed:\n%s" % (name, threads, out.stdout[-2000:]))
    return None


def spawn_best(name, threads, scale, honest, pin, repeat):
    best = None
    for _ in range(repeat):
        r = spawn(name, threads, scale, honest, pin)
        if r is not None and (best is None or r[0] > best[0]):
            best = r
    return best


def line(name, t, r, what=""):
    # cores busy = CPU seconds per wall second: what the setting really used.
    return ("pytorch   model %s at %d thread%s%s: %8.0f tokens/s  %7.1f ms/step  %6.1f GFLOP/s  %6.0f tokens/cpu-s  "
            "%4.2f cores busy" % (name, t, "" if t == 1 else "s", what, r[0], r[1] * 1e3, r[2], r[3], r[3] and r[0] / r[3]))


def main():
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    only = sys.argv[2] if len(sys.argv) > 2 else None
    cores = len(os.sched_getaffinity(0)) or 1
    settings = sorted({1, cores})
    pin = os.environ.get("BENCH_PIN1") == "1"
    repeat = max(1, int(os.environ.get("BENCH_REPEAT", "1") or "1"))
    print("pytorch   torch %s, threads tried %s, each in a fresh process with %s = the count%s; best of %d run%s each"
          % (torch.__version__, settings, "/".join(THREAD_VARS), "; 1 thread pinned to one CPU" if pin else "",
             repeat, "" if repeat == 1 else "s"), flush=True)
    for name in MODELS:
        if only and name != only:
            continue
        shape, batch, _ = MODELS[name]
        best = None
        for t in settings:
            r = spawn_best(name, t, scale, True, pin and t == 1, repeat)
            if r is None:
                continue
            # Each setting too: the per-thread comparison needs them.
            print(line(name, t, r), flush=True)
            if best is None or r[0] > best[0][0]:
                best = (r, t)
        # The figure earlier versions of this bench reported as "1 thread".
        # It is a setting a user may run (its default pools keep every core
        # busy) and sometimes PyTorch's fastest, so it competes for "best"
        # as a run on all the cores; the per-thread lines use the honest runs.
        r = spawn_best(name, 1, scale, False, False, repeat)
        how = ""
        if r is not None:
            print(line(name, 1, r, " old style (set_num_threads only)"), flush=True)
            if best is None or r[0] > best[0][0]:
                best, how = (r, cores), ", set_num_threads(1) with default pools"
        if best is None:
            continue
        (tps, dt, gf, tcpu, loss), t = best
        print("pytorch   model %s: micro-batch %d x %d: %8.0f tokens/s  %7.1f ms/step  %6.1f GFLOP/s  "
              "%6.0f tokens/cpu-s  (best with %d threads%s, last loss %.3f)"
              % (name, batch, shape[6], tps, dt * 1e3, gf, tcpu, t, how, loss), flush=True)


if __name__ == "__main__":
    main()
