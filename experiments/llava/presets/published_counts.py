#!/usr/bin/env python3
"""Parameter counts of the presets' published towers, for presets_test.cc.

Each model is instantiated by transformers on the meta device (no memory) from the shape fields of its
official config.json on the HuggingFace hub, and its parameters are counted. The results agree with the model
cards (Mistral-7B-v0.3: 7.25B; Meta-Llama-3-8B: 8.03B; Qwen2.5-7B: 7.61B; Qwen2-0.5B: 0.49B; CLIP ViT-L/14-336
vision tower: 304M; SigLIP so400m: "400M"-class, 428M for the vision tower with its pooling head).
Measured with transformers 5.23.0 / torch 2.11.0:

  mistral-7b-v0.3 7248023552
  llama-3-8b 8030261248
  qwen2.5-7b 7615616512
  qwen2-0.5b 494032768
  clip-vit-large-patch14-336 303507456 post_layernorm 2048
  siglip-so400m-patch14-384 428225600 head 15238352

Run: python3 experiments/llava/presets/published_counts.py
"""
import torch
from transformers import (AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, MistralConfig,
                          Qwen2Config, SiglipVisionConfig, SiglipVisionModel)


def count(m):
    return sum(p.numel() for p in m.parameters())


def main():
    with torch.device("meta"):
        lms = {
            "mistral-7b-v0.3": MistralConfig(vocab_size=32768, hidden_size=4096, intermediate_size=14336,
                                             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                             tie_word_embeddings=False),
            "llama-3-8b": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                      tie_word_embeddings=False),
            "qwen2.5-7b": Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                      num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                      tie_word_embeddings=False),
            "qwen2-0.5b": Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                      num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                      tie_word_embeddings=True),
        }
        for name, config in lms.items():
            print(name, count(AutoModelForCausalLM.from_config(config)))
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                num_attention_heads=16, image_size=336, patch_size=14))
        print("clip-vit-large-patch14-336", count(clip), "post_layernorm",
              sum(p.numel() for n, p in clip.named_parameters() if "post_layernorm" in n))
        siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                                      num_attention_heads=16, image_size=384, patch_size=14))
        print("siglip-so400m-patch14-384", count(siglip), "head",
              sum(p.numel() for n, p in siglip.named_parameters() if n.startswith("head")))


if __name__ == "__main__":
    main()
