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
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/attention.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/mlp.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"

namespace megatron::transformer {

class TransformerLayer : public MegatronModule {
 public:
  TransformerLayer(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                   int layer_index, const ModelParallel& parallel = {});
  // attention_mask: see SelfAttention::Forward (only for config.attn_mask_type == kPadding).
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                     const at::Tensor& attention_mask = {}) const;

 private:
  TransformerConfig config_;
  Norm* input_layernorm_;
  SelfAttention* self_attention_;
  Norm* pre_mlp_layernorm_;
  MLP* mlp_;
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
                   const ModelParallel& parallel = {}, const BlockPart& part = {});
  // attention_mask: see SelfAttention::Forward (only for config.attn_mask_type == kPadding).
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                     const at::Tensor& attention_mask = {}) const;

 private:
  class LayerList : public MegatronModule {
   public:
    LayerList(const TransformerConfig& config, const std::shared_ptr<const BackendProvider>& backend,
              const ModelParallel& parallel, int begin, int end);
    std::vector<TransformerLayer*> layers;
  };
  LayerList* layers_;
  Norm* final_layernorm_ = nullptr;  // absent when !config.final_layernorm
};

}  // namespace megatron::transformer
