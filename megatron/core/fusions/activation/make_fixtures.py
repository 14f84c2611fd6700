#!/usr/bin/env python3
"""Writes testdata/torch_activation.txt: PyTorch's float64 outputs and autograd gradients of bias + activation.

Closed-form inputs that activation_test.cc rebuilds: x [3, 8] with x[i] = 3 sin(0.37 i), bias [8] with
bias[i] = 0.5 cos(0.9 i), dy (y's shape) with dy[i] = cos(0.11 i). Kinds: gelu_tanh (torch's
gelu(approximate="tanh")), gelu_erf (gelu), swiglu (silu(gate) * up on [gate; up]), plus Megatron's own
bias_gelu / bias_gelu_back formulas (legacy fused_bias_gelu.py) as megatron_gelu y / dx.

Run: python3 megatron/core/fusions/activation/make_fixtures.py
"""
import math
import os

import torch
import torch.nn.functional as F


def closed_form(n, f):
    return torch.tensor([f(i) for i in range(n)], dtype=torch.float64)


def main():
    rows, cols = 3, 8
    x0 = closed_form(rows * cols, lambda i: 3 * math.sin(0.37 * i)).view(rows, cols)
    b0 = closed_form(cols, lambda i: 0.5 * math.cos(0.9 * i))
    lines = ["# x [3, 8] = 3 sin(0.37 i), bias [8] = 0.5 cos(0.9 i), dy = cos(0.11 i)"]
    kinds = {
        "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
        "gelu_erf": lambda z: F.gelu(z),
        "swiglu": lambda z: F.silu(z[..., : z.shape[-1] // 2]) * z[..., z.shape[-1] // 2:],
    }
    for name, fn in kinds.items():
        x = x0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        y = fn(x + b)
        dy = closed_form(y.numel(), lambda i: math.cos(0.11 * i)).view(y.shape)
        y.backward(dy)
        for what, t in (("y", y.detach()), ("dx", x.grad), ("dbias", b.grad)):
            lines.append(f"{name} {what} " + " ".join(repr(v) for v in t.flatten().tolist()))
    # Megatron's bias_gelu and bias_gelu_back, verbatim formulas.
    z = x0 + b0
    y = z * 0.5 * (1.0 + torch.tanh(0.79788456 * z * (1 + 0.044715 * z * z)))
    tanh_out = torch.tanh(0.79788456 * z * (1 + 0.044715 * z * z))
    ff = 0.5 * z * ((1 - tanh_out * tanh_out) * (0.79788456 + 0.1070322243 * z * z)) + 0.5 * (1 + tanh_out)
    dy = closed_form(z.numel(), lambda i: math.cos(0.11 * i)).view(z.shape)
    lines.append("megatron_gelu y " + " ".join(repr(v) for v in y.flatten().tolist()))
    lines.append("megatron_gelu dx " + " ".join(repr(v) for v in (ff * dy).flatten().tolist()))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "torch_activation.txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
