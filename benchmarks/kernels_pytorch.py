#!/usr/bin/env python3
"""PyTorch eager and torch.compile on the shapes of softmax_benchmark and activation_benchmark, timed like our
suites (CUDA events per call, cold L2 by rotating input sets, median), for side-by-side tables in RESULTS.md.
Measurement only: run on the GPU machine with its own Python (python3 benchmarks/kernels_pytorch.py).

Forward: the op; backward: torch.autograd.grad of the op's (already computed) output with a given dy, i.e. the
backward kernels alone (for softmax, from the saved output, as autograd does). Prints one line per case: name, eager us, compiled us, bytes/s of each.
"""
import json
import sys

import torch
import torch._functorch.config
import torch.nn.functional as F

L2_BYTES = 50 * 2**20
# Backward timing calls autograd.grad on one graph repeatedly (retain_graph); compiled graphs donate buffers by
# default, which forbids that.
torch._functorch.config.donated_buffer = False


def median_us(fn, sets, reps=30, warmup=5):
    for i in range(warmup):
        fn(sets[i % len(sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(sets[i % len(sets)])
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3)
    times.sort()
    return times[len(times) // 2]


def n_sets(bytes_per_set):
    return max(2, -(-3 * L2_BYTES // bytes_per_set))


def softmax_cases():
    scale = 0.125
    for b, np_, sq, sk in ((4, 16, 1024, 1024), (1, 16, 4096, 4096)):
        for form in ("causal", "explicit_mask", "unmasked"):
            numel = b * np_ * sq * sk
            read = b * np_ * (sq * (sq + 1) // 2) * 2 if form == "causal" else numel * 2
            mask_bytes = b * sq * sk if form == "explicit_mask" else 0
            causal = torch.triu(torch.ones(sq, sk, dtype=torch.bool, device="cuda"), 1)

            def fwd(s, form=form, causal=causal):
                z = s["x"].float() * scale
                if form == "explicit_mask":
                    z = z.masked_fill(s["mask"], -10000.0)
                elif form == "causal":
                    z = z.masked_fill(causal, -10000.0)
                return torch.softmax(z, -1).bfloat16()

            def make(dir_, b=b, np_=np_, sq=sq, sk=sk, form=form):
                s = {"x": torch.randn(b, np_, sq, sk, device="cuda", dtype=torch.bfloat16) * 4}
                if form == "explicit_mask":
                    s["mask"] = torch.randn(b, 1, sq, sk, device="cuda") > 1.0
                if dir_ == "backward":
                    s["x"].requires_grad_(True)
                    s["dy"] = torch.randn_like(s["x"])
                return s
            shape = f"bf16/{b}x{np_}x{sq}x{sk}"
            yield (f"softmax/{form}/forward/{shape}", fwd, make, "forward", read + mask_bytes + numel * 2)
            yield (f"softmax/{form}/backward/{shape}", fwd, make, "backward", 2 * read + numel * 2)


def activation_cases():
    for kind, rows, cols in (("bias_gelu_tanh", 16384, 3072), ("bias_gelu_erf", 16384, 3072),
                             ("swiglu", 8192, 2 * 11008)):
        x_bytes = rows * cols * 2
        y_bytes = x_bytes // 2 if kind == "swiglu" else x_bytes

        def fwd(s, kind=kind):
            x = s["x"]
            if kind == "swiglu":
                gate, up = x.chunk(2, -1)
                return F.silu(gate) * up
            return F.gelu(x + s["bias"], approximate="tanh" if kind == "bias_gelu_tanh" else "none")

        def make(dir_, rows=rows, cols=cols, kind=kind):
            s = {"x": torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) * 2,
                 "bias": torch.randn(cols, device="cuda", dtype=torch.bfloat16)}
            if dir_ == "backward":
                s["x"].requires_grad_(True)
                s["dy"] = torch.randn(rows, cols // 2 if kind == "swiglu" else cols, device="cuda",
                                      dtype=torch.bfloat16)
            return s
        shape = f"bf16/{rows}x{cols}"
        yield (f"{kind}/forward/{shape}", fwd, make, "forward", x_bytes + y_bytes)
        yield (f"{kind}/backward/{shape}", fwd, make, "backward", y_bytes + 2 * x_bytes)


def rope_cases():
    s_, b, n, d = 4096, 2, 32, 128
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32, device="cuda") / d))
    freqs = torch.outer(torch.arange(s_, dtype=torch.float32, device="cuda"), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, None, :]
    cos_, sin_ = emb.cos().bfloat16(), emb.sin().bfloat16()

    def fwd(s):  # Megatron's _apply_rotary_pos_emb_bshd (rotate-half, full rotation, mscale 1)
        t = s["x"]
        x1, x2 = torch.chunk(t, 2, dim=-1)
        return t * cos_ + torch.cat((-x2, x1), dim=-1) * sin_

    def make(dir_):
        s = {"x": torch.randn(s_, b, n, d, device="cuda", dtype=torch.bfloat16)}
        if dir_ == "backward":
            s["x"].requires_grad_(True)
            s["dy"] = torch.randn_like(s["x"])
        return s
    nbytes = 2 * s_ * b * n * d * 2
    yield (f"rope/halves/forward/bf16/{s_}x{b}x{n}x{d}", fwd, make, "forward", nbytes)
    yield (f"rope/halves/backward/bf16/{s_}x{b}x{n}x{d}", fwd, make, "backward", nbytes)


def main():
    results = []
    for name, fwd, make, dir_, nbytes in list(softmax_cases()) + list(activation_cases()) + list(rope_cases()):
        row = {"name": name, "bytes": nbytes}
        for mode in ("eager", "compile"):
            torch._dynamo.reset()  # a fresh compile per case (no recompile limit across cases)
            f = torch.compile(fwd) if mode == "compile" else fwd
            sets = [make(dir_) for _ in range(n_sets(nbytes))]
            if dir_ == "forward":
                call = lambda s, f=f: f(s)  # noqa: E731
            else:
                # Backward alone: the graph is built once per set, each call differentiates it again.
                for s in sets:
                    s["y"] = f(s)

                def call(s):
                    return torch.autograd.grad(s["y"], s["x"], s["dy"], retain_graph=True)
            try:
                with torch.no_grad() if dir_ == "forward" else torch.enable_grad():
                    us = median_us(call, sets)
            except Exception as e:  # a compile failure is a result too
                print(f"{name} {mode}: {e}", file=sys.stderr)
                us = float("nan")
            row[mode + "_us"] = us
            del sets
            torch.cuda.empty_cache()
        print(f"{name:<48} eager {row['eager_us']:9.1f} us ({nbytes / row['eager_us'] / 1e6:6.2f} TB/s)  "
              f"compile {row['compile_us']:9.1f} us ({nbytes / row['compile_us'] / 1e6:6.2f} TB/s)", flush=True)
        results.append(row)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
