// VisionConfig: the shape of a ViT image encoder (Megatron's CLIPViTModel constructor arguments plus the
// TransformerConfig of its encoder stack), the published encoder shapes of examples/multimodal/config.py, and
// get_num_image_embeddings (how many embeddings one image tile contributes to the language model's sequence).
//
//   VisionConfig clip = ClipVitL14Config(336);                 // OpenAI CLIP ViT-L/14 @ 336 px
//   absl::StatusOr<int> n = GetNumImageEmbeddings({.img_h = 336, .img_w = 336, .patch_dim = 14,
//                                                  .vision_model_type = "clip",
//                                                  .disable_vision_class_token = true});   // 576
//
// The encoder stack is a plain TransformerBlock with attn_mask_type = kNone (every patch sees every patch),
// no final layernorm (CLIP normalises before the stack with ln_pre, SigLIP after it with ln_post), biases on
// every linear layer and no dropout (Megatron's encoder config sets dropout 0 for every vision type).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models::vision {

// Megatron's model_subtype: "clip" (class token, conv without bias, ln_pre) or "siglip" (no class token, conv
// with bias, ln_post).
enum class VisionSubtype { kClip, kSiglip };

const char* VisionSubtypeName(VisionSubtype subtype);  // "clip" | "siglip"

struct VisionConfig {
  VisionSubtype model_subtype = VisionSubtype::kClip;
  // The encoder stack (num_layers, hidden_size, heads, ffn, activation, layernorm_epsilon, ...). MakeVisionConfig
  // fills the fields every ViT shares; vocab_size and max_position_embeddings are unused.
  transformer::TransformerConfig transformer;
  int patch_dim = 14;
  int img_h = 336;
  int img_w = 336;
  bool add_class_token = true;
  int class_token_len = 1;

  // Whole patches only (SigLIP may leave a remainder unused, see Validate).
  int num_patches() const { return (img_h / patch_dim) * (img_w / patch_dim); }
  // Tokens the encoder outputs per image: patches plus the class tokens.
  int seq_length() const { return num_patches() + (add_class_token ? class_token_len : 0); }

  // InvalidArgument naming the first offending field, e.g. "vision_model.img_h: 330 is not a multiple of
  // patch_dim 14".
  absl::Status Validate() const;
};

// A VisionConfig with the settings every ViT here shares (Megatron's get_vision_model_config + vit layer spec):
// LayerNorm, biases on all linear layers (add_bias_linear is forced on for vision), dropout 0, no mask, no final
// layernorm in the block; SigLIP drops the class token. Shape fields come from the arguments.
VisionConfig MakeVisionConfig(VisionSubtype subtype, int num_layers, int hidden_size, int num_attention_heads,
                              int ffn_hidden_size, transformer::Activation activation, double layernorm_epsilon,
                              int patch_dim, int img_h, int img_w);

// examples/multimodal/config.py "clip": OpenAI CLIP ViT-L/14 (24 layers, 1024 hidden, 16 heads, FFN 4096,
// quick GeLU, LayerNorm eps 1e-5, one class token).
VisionConfig ClipVitL14Config(int img_size = 336);
// examples/multimodal/config.py "siglip": SigLIP so400m/14 (27 layers, 1152 hidden, 16 heads, FFN 4304, tanh
// GeLU, LayerNorm eps 1e-6, no class token).
VisionConfig SiglipSo400mConfig(int img_size = 384);

// Megatron's get_num_image_embeddings (vision/clip_vit_model.py) for fixed-resolution tiles:
//   patches = (img_h / patch_dim) * (img_w / patch_dim)
//   + class_token_len unless the class token is dropped (always dropped for siglip and hf:// encoders)
//   x 1/4 with pixel shuffle (truncated)
//   + 5 tile-tag tokens (llama3p1, chatml, qwen2p0, qwen2p5) or 6 (nemotron5*), + 1 more for qwen* prompt
//     formats when 10 < max_num_tiles < 100 (two-digit tile numbers).
struct ImageEmbeddingOptions {
  int img_h = 336;
  int img_w = 336;
  int patch_dim = 14;
  std::string vision_model_type = "clip";  // clip | siglip | internvit | internvit300M | radio | radio-g | hf://...
  bool disable_vision_class_token = false;
  int class_token_len = 1;
  bool pixel_shuffle = false;
  bool use_tile_tags = false;
  int max_num_tiles = 0;
  std::string tokenizer_type;  // the prompt format; only read with use_tile_tags
};
absl::StatusOr<int> GetNumImageEmbeddings(const ImageEmbeddingOptions& options);

// Parameter count of a CLIPViTModel built from `config`, by shape arithmetic (no allocation): for presets of
// billions of parameters. Equal to CLIPViTModel::NumParameters() (tested on small shapes).
int64_t VisionParameterCount(const VisionConfig& config);

// Parameter count of the transformer stack alone (layers, plus the final norm when config.final_layernorm).
int64_t TransformerBlockParameterCount(const transformer::TransformerConfig& config);

}  // namespace megatron::models::vision
