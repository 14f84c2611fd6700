#!/usr/bin/env python3
"""Checks that transformers loads our HF exports and computes the fixtures' outputs from them.

  bazel run //tests/hf_parity:export_fixtures -- /tmp/hf_exports
  python3 tests/hf_parity/verify_hf_export.py /tmp/hf_exports

For each exported language model: from_pretrained(strict), logits equal to the fixture's expected logits
(within 1e-5 relative). For each vision model: last_hidden_state equal to the fixture's; with the pooler-only
tensors kept, pooler_output equal to the original HF model's too. Not part of `bazel test` (Python).
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "testdata")


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def load(cls, path):
    model, info = cls.from_pretrained(path, attn_implementation="eager", dtype=torch.float32,
                                      output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not bad, f"{path}: {bad}"
    return model.eval()


def main(out):
    with torch.no_grad():
        for name in ("gpt2", "llama", "qwen2"):
            expected = load_file(os.path.join(TESTDATA, name, "expected.safetensors"))
            model = load(AutoModelForCausalLM, os.path.join(out, name))
            err = rel(model(input_ids=expected["input_ids"]).logits, expected["logits"])
            print(f"{name}: {type(model).__name__} loads; logits relative error {err:.2e}")
            assert err <= 1e-5, name
        for name in ("clip_vision", "siglip_vision"):
            expected = load_file(os.path.join(TESTDATA, name, "expected.safetensors"))
            original = load(AutoModel, os.path.join(TESTDATA, name))
            ref = original(pixel_values=expected["pixel_values"])
            for suffix in ("", "_bare"):
                model = load(AutoModel, os.path.join(out, name + suffix))
                got = model(pixel_values=expected["pixel_values"])
                err = rel(got.last_hidden_state, expected["last_hidden_state"])
                print(f"{name}{suffix}: {type(model).__name__} loads; last_hidden_state relative error {err:.2e}")
                assert err <= 1e-5, name
                if not suffix:
                    assert torch.equal(got.pooler_output, ref.pooler_output), f"{name}: pooler_output differs"
    print("all exports load in transformers and reproduce the fixtures")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
