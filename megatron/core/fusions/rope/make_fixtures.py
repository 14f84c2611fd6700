#!/usr/bin/env python3
"""Writes testdata/torch_rope.txt: Megatron's rotary embedding applied to a small t, forward and autograd backward.

The functions below transcribe megatron/core/models/common/embeddings/rotary_pos_embedding.py
(RotaryEmbedding.forward: inv_freq over rotary_percent * kv_channels, emb = cat(freqs, freqs) or, interleaved,
the angles repeated pairwise) and rope_utils.py (_rotate_half, _apply_rotary_pos_emb_bshd with mscale 1), run in
float64. Closed-form inputs that rope_test.cc rebuilds: t [s=5, b=2, n=3, d=8] with t[i] = 2 sin(0.3 i + 0.1),
dy[i] = cos(0.17 i); rotary base 10000; cases: halves / interleaved x rotary_percent 1.0 / 0.5.

Run: python3 megatron/core/fusions/rope/make_fixtures.py
"""
import math
import os

import torch


def rotary_freqs(seq_len, kv_channels, rotary_percent, interleaved, base=10000.0):
    dim = int(kv_channels * rotary_percent)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    seq = torch.arange(seq_len, dtype=torch.float64)
    freqs = torch.outer(seq, inv_freq)
    if not interleaved:
        emb = torch.cat((freqs, freqs), dim=-1)
    else:
        emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
    return emb[:, None, None, :]


def rotate_half(x, interleaved):
    if not interleaved:
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    x_new = torch.stack((-x2, x1), dim=-1)
    return x_new.view(x_new.shape[0], x_new.shape[1], x_new.shape[2], -1)


def apply_rotary_pos_emb_bshd(t, freqs, interleaved):
    rot_dim = freqs.shape[-1]
    t, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    cos_ = torch.cos(freqs).to(t.dtype)
    sin_ = torch.sin(freqs).to(t.dtype)
    t = (t * cos_) + (rotate_half(t, interleaved) * sin_)
    return torch.cat((t, t_pass), dim=-1)


def main():
    s, b, n, d = 5, 2, 3, 8
    count = s * b * n * d
    t0 = torch.tensor([2 * math.sin(0.3 * i + 0.1) for i in range(count)], dtype=torch.float64).view(s, b, n, d)
    dy = torch.tensor([math.cos(0.17 * i) for i in range(count)], dtype=torch.float64).view(s, b, n, d)
    lines = ["# t [5, 2, 3, 8] = 2 sin(0.3 i + 0.1), dy = cos(0.17 i); case = layout percent"]
    for layout in ("halves", "interleaved"):
        for percent in (1.0, 0.5):
            freqs = rotary_freqs(s, d, percent, layout == "interleaved")
            t = t0.clone().requires_grad_(True)
            y = apply_rotary_pos_emb_bshd(t, freqs, layout == "interleaved")
            y.backward(dy)
            case = f"{layout}_{percent}"
            lines.append(f"{case} freqs " + " ".join(repr(v) for v in freqs.flatten().tolist()))
            lines.append(f"{case} y " + " ".join(repr(v) for v in y.detach().flatten().tolist()))
            lines.append(f"{case} dt " + " ".join(repr(v) for v in t.grad.flatten().tolist()))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "torch_rope.txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
