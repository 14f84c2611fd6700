#!/usr/bin/env python3
"""Reference safetensors files for //megatron/core/checkpointing:safetensors_test.

  python3 megatron/core/checkpointing/testdata/make_fixtures.py
      Writes testdata/python_reference.safetensors with the `safetensors` library. The C++ test must
      read back exactly the tensors of expected_tensors() (it builds the same tensors with ATen).

  python3 megatron/core/checkpointing/testdata/make_fixtures.py --verify FILE_OR_ZIP
      Loads a file written by OUR SaveSafetensors (the test leaves `ours.safetensors` in
      bazel-testlogs/megatron/core/checkpointing/safetensors_test/test.outputs/) with the Python library
      and checks it equals expected_tensors() bit for bit. Not run in CI.

Keep expected_tensors() in sync with ExpectedTensors() in safetensors_test.cc.
"""
import os
import sys
import tempfile
import zipfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "python_reference.safetensors")
METADATA = {"format": "pt", "source": "make_fixtures.py"}


def expected_tensors():
    return {
        "f64": torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3,
        "f32": (torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) - 10) * 0.25,
        "f16": (torch.arange(-4, 4, dtype=torch.float32) / 3).to(torch.float16),
        "bf16": (torch.arange(10, dtype=torch.float32).reshape(2, 5) / 3).to(torch.bfloat16),
        "i64": torch.tensor([-(2**62), -1, 0, 1, 2**62 + 5], dtype=torch.int64),
        "i32": torch.arange(-3, 3, dtype=torch.int32),
        "i16": torch.tensor([-32768, 0, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "f8_e4m3": (torch.arange(8, dtype=torch.float32) * 0.5).to(torch.float8_e4m3fn),
        "f8_e5m2": (torch.arange(8, dtype=torch.float32) * -0.25).to(torch.float8_e5m2),
        "scalar": torch.tensor(3.5, dtype=torch.float32),  # 0-d
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "empty_i64": torch.zeros(0, dtype=torch.int64),
    }


def same(a, b):
    """Same dtype, shape and bytes."""
    def raw(t):
        return t.contiguous().reshape(-1).view(torch.uint8).tolist()
    return a.dtype == b.dtype and a.shape == b.shape and raw(a) == raw(b)


def make():
    save_file(expected_tensors(), FIXTURE, metadata=METADATA)
    got = load_file(FIXTURE)
    assert all(same(got[k], v) for k, v in expected_tensors().items())
    print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE)} bytes)")


def verify(target):
    if target.endswith(".zip"):
        tmp = tempfile.mkdtemp()
        zipfile.ZipFile(target).extractall(tmp)
        target = os.path.join(tmp, "ours.safetensors")
    got = load_file(target)
    want = expected_tensors()
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for k, v in want.items():
        assert same(got[k], v), (k, got[k], v)
    with safe_open(target, "pt") as f:
        meta = f.metadata()
    assert meta == METADATA, meta
    print(f"python safetensors {__import__('safetensors').__version__} read {target}: OK "
          f"({len(got)} tensors, bit-exact, metadata {meta})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(sys.argv[2])
    elif len(sys.argv) == 1:
        make()
    else:
        sys.exit(__doc__)
