#!/usr/bin/env python3
"""Writes the softmax unit's fixtures.

testdata/availability.txt: FusedScaleMaskSoftmax.is_kernel_available over a grid of shapes and settings.
testdata/torch_softmax.txt: PyTorch's outputs for the three forms on a small input (float64 forward and autograd
backward; and the module's fp32 fallback path on bf16 input), the inputs being closed-form so softmax_test.cc
rebuilds them: x[i] = 3 sin(0.37 i), dy[i] = cos(0.11 i) over the flat index, mask[bb, 0, q, k] = (7q + 3k + bb)
% 5 == 0.

The two functions below are Megatron's, transcribed line for line (not imported: megatron-core needs its CUDA
extensions to import): `is_kernel_available` from megatron/core/fusions/fused_softmax.py (the legacy
megatron/legacy/model/fused_softmax.py is the same with 16384 for 4096) and `get_batch_per_block` from the CUDA
header scaled_masked_softmax.h that the Python calls. softmax_test.cc enumerates the same grid (read from the file's
header lines) and checks IsFusedSoftmaxAvailable bit for bit.

Run: python3 megatron/core/fusions/softmax/make_fixtures.py
"""
import itertools
import math
import os

import torch

WARP_SIZE = 32


def log2_ceil(value):
    log2_value = 0
    while (1 << log2_value) < value:
        log2_value += 1
    return log2_value


def get_batch_per_block(query_seq_len, key_seq_len, batches, attn_heads):
    log2_elements = log2_ceil(key_seq_len)
    next_power_of_two = 1 << log2_elements
    warp_size = next_power_of_two if next_power_of_two < WARP_SIZE else WARP_SIZE
    batches_per_warp = 2 if next_power_of_two <= 128 else 1
    threads_per_block = 128
    warps_per_block = threads_per_block // warp_size
    return warps_per_block * batches_per_warp


def is_kernel_available(fusion, input_in_float16, causal, max_sk, mask, b, np, sq, sk):
    attn_batches = b * np
    if (
        fusion
        and input_in_float16
        and 16 < sk <= max_sk
        and sq % 4 == 0
        and sk % 4 == 0
        and attn_batches % 4 == 0
    ):
        if 0 <= sk <= max_sk:
            batch_per_block = get_batch_per_block(sq, sk, b, np)
            if causal:
                if attn_batches % batch_per_block == 0:
                    return True
            else:
                if sq % batch_per_block == 0:
                    return True
    return False


GRID = {
    "b": [1, 2, 3, 4, 8],
    "np": [1, 2, 4, 5, 16],
    "sq": [1, 4, 8, 12, 16, 20, 64, 96, 128, 4096],
    "sk": [4, 8, 16, 17, 20, 24, 32, 33, 64, 96, 128, 129, 132, 256, 260, 512, 1024, 2048, 4096, 4100, 8192,
           16384, 16388],
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "availability.txt")
    lines = ["# FusedScaleMaskSoftmax.is_kernel_available (megatron-core / legacy), from make_fixtures.py"]
    for key, values in GRID.items():
        lines.append(key + ": " + " ".join(map(str, values)))
    # One line per setting: max_sk mask dtype fusion, then one bit per (b, np, sq, sk) in row-major grid order.
    for max_sk, mask, dtype, fusion in itertools.product([16384, 4096], ["causal", "padding"],
                                                          ["fp16", "bf16", "fp32"], [1, 0]):
        bits = "".join(
            "1" if is_kernel_available(fusion, dtype != "fp32", mask == "causal", max_sk, None, b, np, sq, sk)
            else "0"
            for b, np, sq, sk in itertools.product(GRID["b"], GRID["np"], GRID["sq"], GRID["sk"]))
        lines.append(f"{max_sk} {mask} {dtype} {fusion} {bits}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(out, sum(line.count("1") for line in lines[5:]), "available of", 24 * len(bits))


def torch_fixture():
    b, np_, sq, sk, scale = 2, 3, 5, 5, 0.7
    n = b * np_ * sq * sk
    x = torch.tensor([3 * math.sin(0.37 * i) for i in range(n)], dtype=torch.float64).view(b, np_, sq, sk)
    dy = torch.tensor([math.cos(0.11 * i) for i in range(n)], dtype=torch.float64).view(b, np_, sq, sk)
    mask = torch.tensor([[[[(7 * q + 3 * k + bb) % 5 == 0 for k in range(sk)] for q in range(sq)]]
                         for bb in range(b)], dtype=torch.bool)
    causal = torch.triu(torch.ones(sq, sk, dtype=torch.bool), diagonal=1)
    lines = [f"# b np sq sk scale: {b} {np_} {sq} {sk} {scale}"]
    forms = {"none": None, "explicit": mask, "causal": causal}
    for name, m in forms.items():
        xx = x.clone().requires_grad_(True)
        z = xx * scale
        if m is not None:
            # attention_mask_func fills -10000; the causal kernel excludes, which for softmax is -inf.
            z = z.masked_fill(m, -float("inf") if name == "causal" else -10000.0)
        y = torch.softmax(z, dim=-1)
        y.backward(dy)
        lines.append(f"{name} y " + " ".join(repr(v) for v in y.detach().flatten().tolist()))
        lines.append(f"{name} dx " + " ".join(repr(v) for v in xx.grad.flatten().tolist()))
    # The module's unfused path on bf16 input with softmax_in_fp32 and a scale (forward_torch_softmax).
    for name, m in (("explicit", mask), ("causal", causal)):
        inp = x.to(torch.bfloat16).float() * scale
        probs = torch.nn.Softmax(dim=-1)(inp.masked_fill(m, -10000.0)).bfloat16()
        lines.append(f"{name} fallback_bf16 " + " ".join(repr(v) for v in probs.double().flatten().tolist()))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "torch_softmax.txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch_fixture()
    main()
