#!/usr/bin/env python3
"""Writes the HuggingFace vision (and Qwen2) parity fixtures in tests/hf_parity/testdata/ (see README.md).

  clip_vision/, siglip_vision/:  config.json + model.safetensors (save_pretrained) of a tiny random
      CLIPVisionModel / SiglipVisionModel, and expected.safetensors with
        pixel_values [2, 3, 16, 16], last_hidden_state (fp32), last_hidden_state_fp64 (the model in float64),
        probe (fixed random weights, the shape of last_hidden_state), loss = sum(last_hidden_state * probe),
        grad.<param> = d(loss)/d(param) for every parameter that reaches last_hidden_state
        (SigLIP's attention-pooling head and CLIP's post_layernorm do not: they feed only pooler_output,
        which Megatron does not use).
  qwen2/:  a tiny Qwen2ForCausalLM (q/k/v biases, GQA, tied embeddings) in the format of make_fixtures.py.

Run from anywhere:  python3 tests/hf_parity/make_vision_fixtures.py
Deterministic on CPU (fixed seeds, eager attention, fp32; fp64 for *_fp64).
"""
import copy
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config, SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (the language-model fixture writer; reused for Qwen2)

OUT = make_fixtures.OUT
BATCH = 2


def make_vision(name, model_class, config, param_seed, input_seed):
    out_dir = os.path.join(OUT, name)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    model = model_class(config)
    model.config._attn_implementation = "eager"
    make_fixtures.randomize_(model, param_seed)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)

    g = torch.Generator().manual_seed(input_seed)
    pixels = torch.randn((BATCH, 3, config.image_size, config.image_size), generator=g)
    model.zero_grad(set_to_none=True)
    hidden = model(pixel_values=pixels).last_hidden_state
    probe = torch.randn(hidden.shape, generator=g)
    loss = (hidden * probe).sum()
    loss.backward()
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        hidden64 = model64(pixel_values=pixels.double()).last_hidden_state

    expected = {
        "pixel_values": pixels.contiguous(),
        "last_hidden_state": hidden.detach().contiguous(),
        "last_hidden_state_fp64": hidden64.contiguous(),
        "probe": probe.contiguous(),
        "loss": loss.detach().reshape(()).contiguous(),
    }
    for pname, p in model.named_parameters():
        if p.grad is None:
            # SigLIP's pooling head and CLIP's post_layernorm only feed pooler_output.
            assert pname.startswith(("head.", "post_layernorm.")), f"{name}: {pname} has no gradient"
            continue
        expected["grad." + pname] = p.grad.detach().contiguous()
    save_file(expected, os.path.join(out_dir, "expected.safetensors"),
              metadata={"generator": f"tests/hf_parity/make_vision_fixtures.py torch={torch.__version__} "
                                     f"transformers={transformers.__version__}"})

    reloaded = model_class.from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        again = reloaded(pixel_values=pixels).last_hidden_state
    assert torch.equal(again, hidden.detach()), f"{name}: reload changed last_hidden_state"
    print(f"== {name}: |last_hidden_state| max {hidden.abs().max().item():.3f}, fp32-vs-fp64 max diff "
          f"{(hidden.double() - hidden64).abs().max().item():.2e}")
    stored = load_file(os.path.join(out_dir, "model.safetensors"))
    for k in sorted(stored):
        print(f"     {k:55s} {list(stored[k].shape)}")


def main():
    torch.use_deterministic_algorithms(True)
    common = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  image_size=16, patch_size=4, attention_dropout=0.0)
    make_vision("clip_vision", CLIPVisionModel, CLIPVisionConfig(hidden_act="quick_gelu", layer_norm_eps=1e-5,
                                                                 **common),
                param_seed=3, input_seed=13)
    make_vision("siglip_vision", SiglipVisionModel,
                SiglipVisionConfig(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=True,
                                   **common),
                param_seed=4, input_seed=14)
    qwen2 = Qwen2Config(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                        rms_norm_eps=1e-6, rope_theta=1000.0, tie_word_embeddings=True,
                        bos_token_id=100, eos_token_id=100)
    make_fixtures.make("qwen2", qwen2, param_seed=5, input_seed=15)
    total = sum(os.path.getsize(os.path.join(OUT, d, f)) for d in ("clip_vision", "siglip_vision", "qwen2")
                for f in os.listdir(os.path.join(OUT, d)))
    print(f"vision + qwen2 fixture size: {total} bytes")
    assert total < 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
