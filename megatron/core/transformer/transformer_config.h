// TransformerConfig: the shape and numerics of a transformer stack, as in Megatron's
// megatron/core/transformer/transformer_config.py (the subset this platform implements so far).
//
// Model code depends on this struct, not on the recipe protobuf; `FromProto` converts a recipe's ModelConfig
// and `Validate` rejects impossible shapes with one message that names the field.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace megatron::proto {
class ModelConfig;
}

namespace megatron::transformer {

enum class Normalization { kLayerNorm, kRMSNorm };
enum class Activation { kGelu, kGeluTanh, kSwiGLU, kRelu, kQuickGelu };  // quick GeLU: x * sigmoid(1.702 x) (CLIP)
// Self-attention masking (Megatron's AttnMaskType): causal (GPT), padding (an explicit boolean mask, true =
// masked out, as Megatron's attention_mask; BERT/T5 encoders), none (vision encoders).
enum class AttnMask { kCausal, kNone, kPadding };
// kRelative: T5's bucketed relative position bias added to the attention scores (models/common/
// relative_pos_embedding.h); the embedding then adds no positions.
enum class PositionEmbedding { kLearnedAbsolute, kRope, kNone, kRelative };
// Where a layer normalises. kPre (Megatron core): x + f(norm(x)), and the block ends with final_layernorm.
// kPost (the original Transformer/BERT ordering, HuggingFace BERT): norm(x + f(x)), no final norm needed.
enum class NormPlacement { kPre, kPost };
// Which implementation builds each role of a layer (Megatron's BackendSpecProvider): kLocal = plain ATen,
// kFused = our CUDA kernels where one exists for the role, ATen otherwise.
enum class Backend { kLocal, kFused };

struct TransformerConfig {
  int num_layers = 2;
  int hidden_size = 64;
  int num_attention_heads = 4;
  int num_query_groups = 4;     // == num_attention_heads for MHA; fewer for GQA; 1 for MQA
  int ffn_hidden_size = 256;
  int kv_channels = 16;         // per-head dimension
  Normalization normalization = Normalization::kLayerNorm;
  double layernorm_epsilon = 1e-5;
  Activation activation = Activation::kGelu;
  PositionEmbedding position_embedding_type = PositionEmbedding::kLearnedAbsolute;
  double rotary_base = 10000.0;
  bool share_embeddings_and_output_weights = true;
  double hidden_dropout = 0.1;
  double attention_dropout = 0.1;
  double init_method_std = 0.02;
  bool use_scaled_init_for_output_layers = true;
  bool add_bias_linear = true;
  bool add_qkv_bias = true;
  int max_position_embeddings = 1024;
  int vocab_size = 0;  // the padded size the embedding and output layer are built with
  Backend backend = Backend::kLocal;
  AttnMask attn_mask_type = AttnMask::kCausal;
  bool final_layernorm = true;  // TransformerBlock ends with final_layernorm (Megatron's post_layer_norm)
  NormPlacement norm_placement = NormPlacement::kPre;
  // Attention score scale (Megatron's softmax_scale); 0 means 1/sqrt(kv_channels). T5 uses 1 (no scaling: its
  // initialisation folds the scale into the query weights).
  double softmax_scale = 0.0;

  bool gated_linear_unit() const { return activation == Activation::kSwiGLU; }
  int query_projection_size() const { return kv_channels * num_attention_heads; }
  int kv_projection_size() const { return kv_channels * num_query_groups; }
  // Init std of the layers that write into the residual stream (linear_proj, linear_fc2): Megatron's
  // scaled_init_method_normal, std / sqrt(2 * num_layers), when use_scaled_init_for_output_layers.
  double output_layer_init_std() const;
  double attention_scale() const;  // softmax_scale, or 1/sqrt(kv_channels) when it is 0

  // Returns InvalidArgument naming the first offending field (e.g. "model.num_attention_heads").
  absl::Status Validate() const;
  std::string DebugString() const;
};

// Converts a recipe's ModelConfig; fills derived defaults (ffn = 4h, kv_channels = h / heads, groups = heads).
// `tokenizer_vocab_size` is padded up to `make_vocab_size_divisible_by` when the recipe leaves vocab_size 0.
absl::Status FromProto(const proto::ModelConfig& model, int tokenizer_vocab_size, TransformerConfig* out);

// Megatron's padding rule (_vocab_size_with_padding): round up to a multiple of `divisible_by` (× TP later).
int PadVocabSize(int vocab_size, int divisible_by);

}  // namespace megatron::transformer
