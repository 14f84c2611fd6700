#!/usr/bin/env python3
"""Our fused kernels beside PyTorch eager, torch.compile and Liger-Kernel on the same shapes, in one call on one GPU.

Measurement only (GPU machine, its own Python). Liger is a pure Python + Triton wheel downloaded on the CPU machine
(`pip download liger-kernel --no-deps -d DIR`), installed there with `pip install --no-deps --target T` and put on
PYTHONPATH. Our numbers come from the tracker JSON (benchmarks/track.py --out) written earlier in the same call.

  python3 benchmarks/peers/liger_side_by_side.py TRACK_JSON [OUT_JSON]

Shapes are those of our suites: RMSNorm 16384x4096, SwiGLU 8192x(2x11008), RoPE (rotate-half, full rotation)
4096x2x32x128, cross entropy 16384x50304; all bf16. Timing as benchmarks/kernels_pytorch.py: CUDA events per call,
cold L2 by rotating input sets, median of 30. Backward rows time autograd.grad of an already computed output (the
backward kernels alone), forward rows run under no_grad. Liger's RoPE rotates q and k in one launch: it runs on a
q and a k of this shape and its time is halved (per-tensor time, the unit of our RoPE row). Cross entropy is forward
plus backward of the mean loss (Liger computes the gradient during the forward, into the logits).
"""
import json
import os
import sys

import torch
import torch._functorch.config
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kernels_pytorch import median_us, n_sets  # noqa: E402

torch._functorch.config.donated_buffer = False

try:
    from liger_kernel.transformers import functional as LF
except Exception as e:  # noqa: BLE001 - reported in the table
    LF = None
    print(f"liger_kernel unavailable: {e}", file=sys.stderr)

BF16 = torch.bfloat16
EPS = 1e-5


def rms_cases():
    rows, h = 16384, 4096
    n = rows * h

    def make(dir_):
        s = {"x": torch.randn(rows, h, device="cuda", dtype=BF16), "w": torch.randn(h, device="cuda", dtype=BF16)}
        if dir_ == "backward":
            s["x"].requires_grad_(True)
            s["w"].requires_grad_(True)
            s["dy"] = torch.randn_like(s["x"])
        return s
    peers = {"eager": lambda s: F.rms_norm(s["x"], (h,), s["w"], EPS)}
    if LF:
        peers["liger"] = lambda s: LF.liger_rms_norm(s["x"], s["w"], EPS)
    for dir_, nbytes in (("forward", 2 * n * 2), ("backward", 3 * n * 2)):
        yield (f"RMSNorm/{dir_}/bf16/{rows}x{h}", f"fused/RMSNorm/{dir_}/bf16/{rows}x{h}", peers, make, dir_,
               nbytes, ("x", "w"), 1.0)


def swiglu_cases():
    rows, h = 8192, 11008
    n = rows * h

    def make(dir_):
        s = {"x": torch.randn(rows, 2 * h, device="cuda", dtype=BF16) * 2}
        s["a"], s["b"] = [t.contiguous() for t in s["x"].chunk(2, -1)]  # Liger takes gate and up apart
        if dir_ == "backward":
            for k in ("x", "a", "b"):
                s[k].requires_grad_(True)
            s["dy"] = torch.randn(rows, h, device="cuda", dtype=BF16)
        return s

    def eager(s):
        gate, up = s["x"].chunk(2, -1)
        return F.silu(gate) * up
    peers = {"eager": eager}
    if LF:
        peers["liger"] = lambda s: LF.liger_swiglu(s["a"], s["b"])
    for dir_, nbytes in (("forward", 3 * n * 2), ("backward", 5 * n * 2)):
        yield (f"swiglu/{dir_}/bf16/{rows}x{2 * h}", f"fused/swiglu/{dir_}/bf16/{rows}x{2 * h}", peers, make, dir_,
               nbytes, {"eager": ("x",), "compile": ("x",), "liger": ("a", "b")}, 1.0)


def rope_cases():
    s_, b, n, d = 4096, 2, 32, 128
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32, device="cuda") / d))
    freqs = torch.outer(torch.arange(s_, dtype=torch.float32, device="cuda"), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos_sbhd, sin_sbhd = emb.cos().bfloat16()[:, None, None, :], emb.sin().bfloat16()[:, None, None, :]
    cos_hf, sin_hf = emb.cos().bfloat16()[None], emb.sin().bfloat16()[None]  # [1, s, d]: HF layout for Liger

    def make(dir_):
        s = {"x": torch.randn(s_, b, n, d, device="cuda", dtype=BF16)}
        # Liger's layout [b, n, s, d]; q and k (transposed views of fresh contiguous tensors)
        s["q"] = torch.randn(b, n, s_, d, device="cuda", dtype=BF16)
        s["k"] = torch.randn(b, n, s_, d, device="cuda", dtype=BF16)
        if dir_ == "backward":
            for key in ("x", "q", "k"):
                s[key].requires_grad_(True)
            s["dy"] = torch.randn_like(s["x"])
        return s

    def eager(s):
        t = s["x"]
        x1, x2 = torch.chunk(t, 2, dim=-1)
        return t * cos_sbhd + torch.cat((-x2, x1), dim=-1) * sin_sbhd
    peers = {"eager": eager}
    if LF:
        peers["liger"] = lambda s: LF.liger_rope(s["q"], s["k"], cos_hf, sin_hf)
    nbytes = 2 * s_ * b * n * d * 2
    for dir_ in ("forward", "backward"):
        yield (f"rope/halves/{dir_}/bf16/{s_}x{b}x{n}x{d}", f"fused/rope/halves/{dir_}/bf16/{s_}x{b}x{n}x{d}", peers,
               make, dir_, nbytes, {"eager": ("x",), "compile": ("x",), "liger": ("q", "k")}, 0.5)


def ce_cases():
    rows, v = 16384, 50304

    def make(dir_):
        return {"x": torch.randn(rows, v, device="cuda", dtype=BF16).requires_grad_(True),
                "t": torch.randint(0, v, (rows,), device="cuda")}

    def eager(s):  # what the local backend runs: fp32 logits, then ATen's cross entropy
        return F.cross_entropy(s["x"].float(), s["t"])
    peers = {"eager": eager}
    if LF:
        peers["liger"] = lambda s: LF.liger_cross_entropy(s["x"], s["t"])
    # read logits, write grad (bf16): the minimum traffic of forward+backward
    yield (f"cross_entropy/fwd+bwd/bf16/{rows}x{v}", "fused/out_of_place/fwd+bwd/bf16/16384x50304", peers, make,
           "fwd+bwd", 2 * rows * v * 2, ("x",), 1.0)


def time_peer(fn, make, dir_, nbytes, inputs):
    sets = [make(dir_) for _ in range(n_sets(nbytes))]
    if dir_ == "forward":
        with torch.no_grad():
            return median_us(fn, sets)
    if dir_ == "backward":
        for s in sets:
            y = fn(s)
            s["ys"] = y if isinstance(y, tuple) else (y,)  # Liger's RoPE returns (q, k)
            s["gs"] = tuple(s["dy"] if t.shape == s["dy"].shape else torch.randn_like(t) for t in s["ys"])

        def call(s):
            return torch.autograd.grad(s["ys"], [s[k] for k in inputs], s["gs"], retain_graph=True)
        return median_us(call, sets)
    # fwd+bwd of a scalar loss
    return median_us(lambda s: torch.autograd.grad(fn(s), [s[k] for k in inputs]), sets)


def main():
    ours = {}
    if len(sys.argv) > 1 and os.path.exists(sys.argv[1]):
        with open(sys.argv[1]) as f:
            ours = json.load(f).get("results", {})
    results = []
    for name, our_name, peers, make, dir_, nbytes, inputs, time_factor in (
            list(rms_cases()) + list(swiglu_cases()) + list(rope_cases()) + list(ce_cases())):
        row = {"name": name, "bytes": nbytes}
        if our_name in ours:
            row["ours_us"] = ours[our_name]["median_us"]
        for mode in ("eager", "compile", "liger"):
            base = peers.get("eager" if mode == "compile" else mode)
            if base is None:
                continue
            torch._dynamo.reset()
            fn = torch.compile(base) if mode == "compile" else base
            keys = inputs[mode] if isinstance(inputs, dict) else inputs
            try:
                us = time_peer(fn, make, dir_, nbytes, keys)
                if mode == "liger":
                    us *= time_factor
            except Exception as e:  # noqa: BLE001 - a failure is a result too
                print(f"{name} {mode}: {type(e).__name__}: {e}", file=sys.stderr)
                us = float("nan")
            row[mode + "_us"] = us
            torch.cuda.empty_cache()
        results.append(row)
    print(f"{'case':<40} " + " ".join(f"{m:>18}" for m in ("ours", "eager", "compile", "liger")))
    for row in results:
        cells = []
        for m in ("ours", "eager", "compile", "liger"):
            us = row.get(m + "_us", float("nan"))
            cells.append(f"{us:8.1f}us {row['bytes'] / us / 1e6:5.2f}TB/s" if us == us else f"{'-':>18}")
        print(f"{row['name']:<40} " + " ".join(cells), flush=True)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
