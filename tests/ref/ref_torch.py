#!/usr/bin/python3
# Independent float64 PyTorch reference for tests/unit/test_model.c: builds the
# Llama / DeepSeek-LLM decoder from torch ops, and reports loss, gradients and
# the weights after AdamW steps with clipping and the warmup + cosine schedule.
#
# usage: ref_torch.py CASE_DIR...   (each holding case.txt, layout.txt,
# params.bin, tokens.bin; writes ref_loss.txt, ref_grads.bin, ref_params.bin)
# module: model
import math
import os
import sys

import torch
import torch.nn.functional as F


def read_case(d):
    cfg = {}
    with open(os.path.join(d, "case.txt")) as f:
        for line in f:
            k, v = line.split("=", 1)
            cfg[k.strip()] = float(v)
    layout = []
    with open(os.path.join(d, "layout.txt")) as f:
        for line in f:
            name, ndim, d0, d1, off = line.split()
            shape = (int(d0), int(d1)) if int(ndim) == 2 else (int(d0),)
            layout.append((name, shape, int(off)))
    return cfg, layout


def expected_shapes(c):
    dim, hd = int(c["dim"]), int(c["dim"]) // int(c["n_heads"])
    q, kv, ffn, vocab = int(c["n_heads"]) * hd, int(c["n_kv_heads"]) * hd, int(c["ffn_dim"]), int(c["vocab"])
    shapes = {"model.embed_tokens.weight": (vocab, dim), "model.norm.weight": (dim,),
              "lm_head.weight": (vocab, dim)}
    for l in range(int(c["n_layers"])):
        p = "model.layers.%d." % l
        shapes[p + "self_attn.q_proj.weight"] = (q, dim)
        shapes[p + "self_attn.k_proj.weight"] = (kv, dim)
        shapes[p + "self_attn.v_proj.weight"] = (kv, dim)
        shapes[p + "self_attn.o_proj.weight"] = (dim, q)
        shapes[p + "mlp.gate_proj.weight"] = (ffn, dim)
        shapes[p + "mlp.up_proj.weight"] = (ffn, dim)
        shapes[p + "mlp.down_proj.weight"] = (dim, ffn)
        shapes[p + "input_layernorm.weight"] = (dim,)
        shapes[p + "post_attention_layernorm.weight"] = (dim,)
    return shapes


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(T, hd, theta):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos(), ang.sin()


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


def loss_sum(P, c, tok):
    logits = forward(P, c, tok[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok[:, 1:].reshape(-1), reduction="sum")


def logits_last(P, c, seq):
    return forward(P, c, seq.view(1, -1))[0, -1]


def forward(P, c, inp):
    B, T = inp.shape
    H, KV = int(c["n_heads"]), int(c["n_kv_heads"])
    hd = int(c["dim"]) // H
    eps = c["norm_eps"]
    cos, sin = rope_tables(T, hd, c["rope_theta"])
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["model.embed_tokens.weight"][inp]
    for l in range(int(c["n_layers"])):
        p = "model.layers.%d." % l
        h = rmsnorm(x, P[p + "input_layernorm.weight"], eps)
        q = F.linear(h, P[p + "self_attn.q_proj.weight"]).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, P[p + "self_attn.k_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        v = F.linear(h, P[p + "self_attn.v_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(causal, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + F.linear(o, P[p + "self_attn.o_proj.weight"])
        h = rmsnorm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = F.silu(F.linear(h, P[p + "mlp.gate_proj.weight"])) * F.linear(h, P[p + "mlp.up_proj.weight"])
        x = x + F.linear(g, P[p + "mlp.down_proj.weight"])
    x = rmsnorm(x, P["model.norm.weight"], eps)
    return F.linear(x, P["lm_head.weight"])


def schedule(c, step):
    lr, min_lr, warm, total = c["lr"], c["min_lr"], c["warmup"], c["max_steps"]
    if step < warm:
        return lr * (step + 1) / warm
    prog = min(1.0, max(0.0, (step - warm) / (total - warm)))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * prog))


def run_case(d):
    c, layout = read_case(d)
    want = expected_shapes(c)
    raw = open(os.path.join(d, "params.bin"), "rb").read()
    flat = torch.frombuffer(bytearray(raw), dtype=torch.float32).to(torch.float64)
    if set(want) != {n for n, _, _ in layout}:
        raise SystemExit("ref_torch: parameter names differ from the Hugging Face Llama set")
    P, order = {}, []
    for name, shape, off in layout:
        if tuple(want[name]) != tuple(shape):
            raise SystemExit("ref_torch: %s has shape %s, expected %s" % (name, shape, want[name]))
        n = math.prod(shape)
        P[name] = torch.nn.Parameter(flat[off:off + n].clone().view(shape))
        order.append((name, off, n))
    steps, B, T = int(c["steps"]), int(c["batch"]), int(c["seq_len"])
    raw = open(os.path.join(d, "tokens.bin"), "rb").read()
    toks = torch.frombuffer(bytearray(raw), dtype=torch.int32).to(torch.int64).view(steps, B, T + 1)
    decay = [P[n] for n, _, _ in order if P[n].dim() == 2]
    nodecay = [P[n] for n, _, _ in order if P[n].dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    with torch.no_grad():
        lt = int(c["logits_t"])
        last = logits_last(P, c, toks[0, 0, :lt])
    last.numpy().tofile(os.path.join(d, "ref_logits.bin"))
    lines = []
    for s in range(steps):
        opt.zero_grad()
        loss = loss_sum(P, c, toks[s])
        (loss / (B * T)).backward()
        if s == 0:
            g = torch.zeros(flat.numel(), dtype=torch.float64)
            for name, off, n in order:
                g[off:off + n] = P[name].grad.reshape(-1)
            g.numpy().tofile(os.path.join(d, "ref_grads.bin"))
        params = [P[n] for n, _, _ in order]
        if c["grad_clip"] > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, c["grad_clip"]))
        else:
            norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)))
        for group in opt.param_groups:
            group["lr"] = schedule(c, s)
        opt.step()
        lines.append("%.17g %.17g\n" % (float(loss), norm))
    out = torch.zeros(flat.numel(), dtype=torch.float64)
    with torch.no_grad():
        for name, off, n in order:
            out[off:off + n] = P[name].reshape(-1)
    out.numpy().tofile(os.path.join(d, "ref_params.bin"))
    with open(os.path.join(d, "ref_loss.txt"), "w") as f:
        f.writelines(lines)


def main():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for d in sys.argv[1:]:
        run_case(d)


if __name__ == "__main__":
    main()
