// SelfAttention (Megatron's transformer/attention.py, local spec): linear_qkv -> split into per-group
// q/k/v -> RoPE -> core attention -> linear_proj.
//
// Note [QKV layout]: linear_qkv's output is grouped by query group, as in Megatron:
//   [ng, (np/ng + 2), hn] = for each group g: its np/ng query heads, then its key head, then its value head.
// This layout is what Megatron checkpoints hold and what tensor parallelism shards (whole groups per rank).
// Under tensor parallelism (ModelParallel) linear_qkv is column-parallel: a contiguous row shard of the
// grouped layout is exactly num_query_groups/tp whole groups, so each rank attends with its own
// num_attention_heads/tp heads, and linear_proj is row-parallel.
// HuggingFace's separate q/k/v (Llama) or packed [q; k; v] (GPT-2) weights are re-ordered on load.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "megatron/core/tensor_parallel/layers.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::transformer {

// Keys and values of past positions for incremental decoding; one entry per layer, each [b, ng, t, hn].
struct KVCache {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
  int64_t seq_len = 0;  // positions already cached (the offset of the next token)

  explicit KVCache(int num_layers) : keys(num_layers), values(num_layers) {}
};

class SelfAttention : public MegatronModule {
 public:
  SelfAttention(const TransformerConfig& config, const BackendProvider& backend, int layer_index,
                const ModelParallel& parallel = {});

  // x: [s, b, h] ([s/tp, b, h] under sequence parallelism); rotary_freqs: [s, 1, 1, hn] for the positions of x, or undefined without RoPE.
  // With `cache`, keys/values of x are appended to cache->keys[layer_index] and attention spans all of them.
  // The mask is config.attn_mask_type; for kPadding, `attention_mask` is the boolean mask of CoreAttention.
  // `attention_bias`: added to the scores (CoreAttention), e.g. T5's relative position bias [1, np, s, s].
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                     const at::Tensor& attention_mask = {}, const at::Tensor& attention_bias = {}) const;

 private:
  TransformerConfig config_;
  int layer_index_;
  int64_t heads_;   // attention heads on this rank (np / tp)
  int64_t groups_;  // query groups on this rank (ng / tp)
  // Exactly one of each pair is set: the plain layer without TP, the parallel one with it.
  Linear* linear_qkv_ = nullptr;   // weight [ng * (np/ng + 2) * hn, h]
  tensor_parallel::ColumnParallelLinear* linear_qkv_tp_ = nullptr;  // weight [(ng/tp) * (np/ng + 2) * hn, h]
  std::unique_ptr<CoreAttention> core_attention_;
  const BackendProvider* backend_;  // RoPE; providers are process-lifetime singletons (GetBackend)
  Linear* linear_proj_ = nullptr;  // weight [h, np * hn]
  tensor_parallel::RowParallelLinear* linear_proj_tp_ = nullptr;  // weight [h, (np/tp) * hn]
};

}  // namespace megatron::transformer
