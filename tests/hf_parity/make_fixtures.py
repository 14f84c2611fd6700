#!/usr/bin/env python3
"""Writes the HuggingFace parity fixtures in tests/hf_parity/testdata/ (see README.md).

For a tiny GPT-2 and a tiny Llama with deliberately non-default random parameters:
  <model>/config.json, <model>/model.safetensors   -- save_pretrained(safe_serialization=True)
  <model>/expected.safetensors                     -- input_ids, labels, logits, logits_fp64,
                                                      per_token_loss, loss, grad.<param name>

Run from anywhere:  python3 tests/hf_parity/make_fixtures.py
Deterministic on CPU (fixed seeds, eager attention, fp32; fp64 for logits_fp64).
"""
import copy
import json
import os
import sys

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
BATCH, SEQ = 2, 12
# The label of the last position (which has no next token) is this fixed id, so every position counts.
LAST_LABEL = 0


def randomize_(model, seed):
    """Larger-than-default random parameters so the parity test is sensitive to every parameter.

    Default init leaves biases at 0 and norm weights at 1, which would hide a missing bias or a wrong
    norm scale; std 0.02 weights make attention nearly uniform, hiding masking/RoPE mistakes.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            is_norm = any(k in name for k in ("ln_", "layernorm", "norm."))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(0.2 * r)


def make(name, config, param_seed, input_seed):
    out_dir = os.path.join(OUT, name)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    randomize_(model, param_seed)
    model.eval()  # dropout is 0 anyway; eval() makes that explicit
    model.save_pretrained(out_dir, safe_serialization=True)

    g = torch.Generator().manual_seed(input_seed)
    input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=g, dtype=torch.int64)
    labels = torch.full_like(input_ids, LAST_LABEL)
    labels[:, :-1] = input_ids[:, 1:]

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=input_ids).logits.float()
    per_token_loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), labels.reshape(-1),
                                     reduction="none").reshape(BATCH, SEQ)
    loss = per_token_loss.mean()
    loss.backward()

    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        logits64 = model64(input_ids=input_ids).logits

    expected = {
        "input_ids": input_ids.contiguous(),
        "labels": labels.contiguous(),
        "logits": logits.detach().contiguous(),
        "logits_fp64": logits64.detach().contiguous(),
        "per_token_loss": per_token_loss.detach().contiguous(),
        "loss": loss.detach().reshape(()).contiguous(),
    }
    # named_parameters() lists a tied parameter once (GPT-2's lm_head.weight is transformer.wte.weight),
    # so its gradient holds both uses.
    params = list(model.named_parameters())
    for pname, p in params:
        assert p.grad is not None, pname
        expected["grad." + pname] = p.grad.detach().float().contiguous()
    save_file(expected, os.path.join(out_dir, "expected.safetensors"),
              # One metadata key: safetensors orders several keys nondeterministically, and the fixtures
              # should be byte-reproducible.
              metadata={"generator": f"tests/hf_parity/make_fixtures.py torch={torch.__version__} "
                                     f"transformers={transformers.__version__} last_label={LAST_LABEL}"})

    # Sanity: the saved checkpoint reloads to the same logits.
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager",
                                                    dtype=torch.float32)
    with torch.no_grad():
        again = reloaded(input_ids=input_ids).logits
    assert torch.equal(again, logits.detach()), f"{name}: reload changed logits"
    assert (logits.double() - logits64).abs().max() < 1e-4

    print(f"== {name}: loss {loss.item():.6f}, |logits| max {logits.abs().max().item():.3f}, "
          f"fp32-vs-fp64 max diff {(logits.double() - logits64).abs().max().item():.2e}")
    stored = load_file(os.path.join(out_dir, "model.safetensors"))
    print(f"   model.safetensors ({len(stored)} tensors):")
    for k in sorted(stored):
        print(f"     {k:50s} {list(stored[k].shape)}")
    print(f"   parameters with grads ({len(params)}):")
    for pname, p in params:
        print(f"     {pname:50s} {list(p.shape)}")


def main():
    torch.use_deterministic_algorithms(True)
    gpt2 = GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                      # GPT-2's default 50256 is outside this vocabulary; the ids are unused here.
                      bos_token_id=100, eos_token_id=100)
    make("gpt2", gpt2, param_seed=1, input_seed=11)
    llama = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                        rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False,
                        attention_bias=False, mlp_bias=False)
    make("llama", llama, param_seed=2, input_seed=12)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"total fixture size: {total} bytes; torch {torch.__version__}, transformers "
          f"{transformers.__version__}")
    assert total < 2 * 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
