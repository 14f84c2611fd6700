// TransformerLayer and TransformerBlock (Megatron's transformer_layer.py / transformer_block.py), pre-norm:
//   x = x + dropout(self_attention(input_layernorm(x)))
//   x = x + dropout(mlp(pre_mlp_layernorm(x)))
// and the block ends with final_layernorm. Activations are sequence-first [s, b, h] ([s/tp, b, h] under
// sequence parallelism, see ModelParallel).
//
// A pipeline chunk builds part of the block (BlockPart): the global layers [layer_begin, layer_end), named by
// their global index (layers.<i>, as Megatron's offset layer numbers), and the final layernorm only where asked
// (the last chunk). Note [Pipeline initialisation]: the layers outside the range are still constructed and
// dropped, one at a time, so that the default generator advances exactly as for the whole block and every kept
// layer starts from the single-process weights (a pipeline run then equals the single-process run).
//
// Decoder layers of an encoder-decoder model (T5) add cross attention between self attention and the MLP
// (WithCrossAttention::kYes; Megatron's pre_cross_attn_layernorm + cross_attention):
//   x = x + dropout(cross_attention(pre_cross_attn_layernorm(x), memory))
//
// config.norm_placement == kPost gives the original (BERT) ordering instead, with its own parameter names so a
// pre-norm checkpoint cannot load silently into a post-norm model:
//   x = post_self_attn_layernorm(x + dropout(self_attention(x)))
//   x = post_cross_attn_layernorm(x + dropout(cross_attention(x, memory)))   (decoder layers)
//   x = post_mlp_layernorm(x + dropout(mlp(x)))
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/attention.h"
#include "megatron/core/transformer/cross_attention.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/mlp.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"

namespace megatron::transformer {

enum class WithCrossAttention { kNo, kYes };

// What a decoder layer attends to besides itself: the encoder output and its padding mask.
struct CrossAttentionInput {
  at::Tensor memory;       // [sk, b, h]
  at::Tensor memory_mask;  // boolean, broadcastable to [b, np, sq, sk], true = masked out; or undefined
};

class TransformerLayer : public MegatronModule {
 public:
  TransformerLayer(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                   int layer_index, const ModelParallel& parallel = {},
                   WithCrossAttention cross = WithCrossAttention::kNo);
  // attention_mask: see SelfAttention::Forward (only for config.attn_mask_type == kPadding);
  // attention_bias: added to the self-attention scores (T5's relative position bias);
  // cross: required by layers built WithCrossAttention::kYes, ignored otherwise.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                     const at::Tensor& attention_mask = {}, const at::Tensor& attention_bias = {},
                     const CrossAttentionInput* cross = nullptr) const;

 private:
  TransformerConfig config_;
  Norm* input_layernorm_ = nullptr;  // pre-norm
  SelfAttention* self_attention_;
  Norm* post_self_attn_layernorm_ = nullptr;  // post-norm
  Norm* pre_cross_attn_layernorm_ = nullptr;  // pre-norm decoder layers
  CrossAttention* cross_attention_ = nullptr;
  Norm* post_cross_attn_layernorm_ = nullptr;  // post-norm decoder layers
  Norm* pre_mlp_layernorm_ = nullptr;  // pre-norm
  MLP* mlp_;
  Norm* post_mlp_layernorm_ = nullptr;  // post-norm
};

// The part of the block a pipeline chunk holds. Default: all of it.
struct BlockPart {
  int layer_begin = 0;
  int layer_end = -1;  // -1: config.num_layers
  bool final_layernorm = true;  // and config.final_layernorm
};

class TransformerBlock : public MegatronModule {
 public:
  TransformerBlock(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                   const ModelParallel& parallel = {}, const BlockPart& part = {},
                   WithCrossAttention cross = WithCrossAttention::kNo);
  // See TransformerLayer::Forward; every layer gets the same mask, bias and cross-attention input.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                     const at::Tensor& attention_mask = {}, const at::Tensor& attention_bias = {},
                     const CrossAttentionInput* cross = nullptr) const;

 private:
  class LayerList : public MegatronModule {
   public:
    LayerList(const TransformerConfig& config, const std::shared_ptr<const BackendProvider>& backend,
              const ModelParallel& parallel, int begin, int end, WithCrossAttention cross);
    std::vector<TransformerLayer*> layers;
  };
  LayerList* layers_;
  Norm* final_layernorm_ = nullptr;  // absent when !config.final_layernorm
};

}  // namespace megatron::transformer
