// The legacy transformer (megatron/legacy/model/transformer.py): ParallelAttention, ParallelMLP,
// ParallelTransformerLayer, ParallelTransformer, single process (tensor-parallel size 1).
//
// Parameter names (relative to the stack, which the language model registers as `encoder`):
//   layers.N.input_norm.{weight,bias}
//   layers.N.self_attention.query_key_value.{weight,bias}  [(np + 2 ng) hn, h]
//   layers.N.self_attention.dense.{weight,bias}            [h, np hn]
//   layers.N.post_attention_norm.{weight,bias}
//   layers.N.mlp.dense_h_to_4h.{weight,bias}               [ffn (x2 for SwiGLU: [gate; up]), h]
//   layers.N.mlp.dense_4h_to_h.{weight,bias}               [h, ffn]
//   final_norm.{weight,bias}
// Note [Legacy QKV layout]: query_key_value's output is viewed as [sq, b, ng, (np/ng + 2) hn]: for each query
// group its np/ng query heads, then one key head, then one value head (checkpoint version >= 2.0; with ng = np
// this is the per-head [np, 3, hn] interleaving). Core's linear_qkv uses the same grouping, so converted
// weights are copied unpermuted; tests/legacy_vs_core checks that the outputs agree.
// Core attention is the legacy one: baddbmm scores with alpha = 1/norm_factor, FusedScaleMaskSoftmax (fused
// kernel or fp32 fallback, see fused_softmax.h), dropout, bmm. With apply_query_key_layer_scaling the norm
// factor is multiplied by the layer number and the softmax rescales by it (fp16 overflow protection; same
// numbers).
// The config is core's TransformerConfig (the legacy args it shares); LegacyOptions holds the flags only the
// legacy tree has. Position embeddings other than learned absolute are not implemented (no RoPE here yet).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "legacy/model/fused_softmax.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::legacy {

struct LegacyOptions {
  bool apply_query_key_layer_scaling = false;
  bool attention_softmax_in_fp32 = true;
  bool masked_softmax_fusion = true;
  bool apply_layernorm_1p = false;
  bool apply_residual_connection_post_layernorm = false;
  bool fp16 = false;  // the parameters' dtype flags FusedScaleMaskSoftmax reads (args.fp16 / args.bf16)
  bool bf16 = false;
};

// InvalidArgument naming the field for what the legacy tree does not implement (or Megatron forbids).
absl::Status ValidateLegacyConfig(const transformer::TransformerConfig& config, const LegacyOptions& options);

// The norm get_norm(config) builds: MixedFusedLayerNorm or RMSNorm.
std::unique_ptr<transformer::Norm> GetNorm(const transformer::TransformerConfig& config, const LegacyOptions& options);

// Self attention (query_key_value) or cross attention (T5 decoders: query [np hn, h] and key_value
// [2 np hn, h], per head [k, v]; no GQA, as in Megatron).
enum class AttentionType { kSelf, kCross };
// Encoder layers, or decoder layers with inter_attention (cross) and post_inter_attention_norm.
enum class LayerType { kEncoder, kDecoder };

class ParallelAttention : public transformer::MegatronModule {
 public:
  // layer_number is 1-based, as in Megatron.
  ParallelAttention(const transformer::TransformerConfig& config, const LegacyOptions& options, int layer_number,
                    AttnMaskType attn_mask_type, AttentionType attention_type = AttentionType::kSelf);
  // hidden [sq, b, h]; mask as FusedScaleMaskSoftmax's; encoder_output [sk, b, h] for cross attention.
  // Returns [sq, b, h] (dense's bias added).
  at::Tensor Forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& encoder_output = {}) const;
  const FusedScaleMaskSoftmax& softmax() const { return *softmax_; }

 private:
  transformer::TransformerConfig config_;
  AttentionType attention_type_;
  double norm_factor_;
  std::optional<FusedScaleMaskSoftmax> softmax_;
  transformer::Linear* query_key_value_ = nullptr;  // self
  transformer::Linear* query_ = nullptr;            // cross
  transformer::Linear* key_value_ = nullptr;        // cross
  transformer::Linear* dense_;
};

class ParallelMLP : public transformer::MegatronModule {
 public:
  ParallelMLP(const transformer::TransformerConfig& config);
  at::Tensor Forward(const at::Tensor& hidden) const;

 private:
  transformer::TransformerConfig config_;
  transformer::Linear* dense_h_to_4h_;
  transformer::Linear* dense_4h_to_h_;
};

class ParallelTransformerLayer : public transformer::MegatronModule {
 public:
  ParallelTransformerLayer(const transformer::TransformerConfig& config, const LegacyOptions& options,
                           int layer_number, AttnMaskType self_attn_mask_type,
                           LayerType layer_type = LayerType::kEncoder);
  // Decoder layers also take the encoder output [se, b, h] and the encoder-decoder mask.
  at::Tensor Forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& encoder_output = {},
                     const at::Tensor& enc_dec_mask = {}) const;
  const ParallelAttention& self_attention() const { return *self_attention_; }

 private:
  transformer::TransformerConfig config_;
  LegacyOptions options_;
  transformer::Norm* input_norm_;
  ParallelAttention* self_attention_;
  transformer::Norm* post_attention_norm_;
  ParallelAttention* inter_attention_ = nullptr;
  transformer::Norm* post_inter_attention_norm_ = nullptr;
  ParallelMLP* mlp_;
};

class ParallelTransformer : public transformer::MegatronModule {
 public:
  ParallelTransformer(const transformer::TransformerConfig& config, const LegacyOptions& options,
                      AttnMaskType self_attn_mask_type, LayerType layer_type = LayerType::kEncoder);
  // hidden [s, b, h] -> [s, b, h] (after final_norm).
  at::Tensor Forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& encoder_output = {},
                     const at::Tensor& enc_dec_mask = {}) const;
  const ParallelTransformerLayer& layer(int i) const { return *layers_[i]; }

 private:
  class LayerList : public transformer::MegatronModule {
   public:
    LayerList(const transformer::TransformerConfig& config, const LegacyOptions& options, AttnMaskType mask_type,
              LayerType layer_type, std::vector<ParallelTransformerLayer*>* out);
  };
  std::vector<ParallelTransformerLayer*> layers_;
  transformer::Norm* final_norm_;
};

}  // namespace megatron::legacy
