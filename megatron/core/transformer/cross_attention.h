// CrossAttention (Megatron's transformer/attention.py CrossAttention, local spec): queries from the decoder
// stream, keys and values from the encoder output ("memory").
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::transformer {

// Parameters:
//   linear_q   weight [np * hn, h]
//   linear_kv  weight [ng * 2 * hn, h], grouped as [ng, 2, hn]: for each query group its key head, then its
//              value head (Megatron's layout; HuggingFace's separate k/v are interleaved on load)
//   linear_proj weight [h, np * hn]
// Single process only (no tensor parallelism yet).
class CrossAttention : public MegatronModule {
 public:
  CrossAttention(const TransformerConfig& config, const BackendProvider& backend);

  // x: [sq, b, h]; memory: [sk, b, h]; memory_mask: boolean, broadcastable to [b, np, sq, sk], true = masked
  // out (encoder padding), or undefined for none.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& memory, const at::Tensor& memory_mask = {}) const;

 private:
  TransformerConfig config_;
  Linear* linear_q_;
  Linear* linear_kv_;
  std::unique_ptr<CoreAttention> core_attention_;
  Linear* linear_proj_;
};

}  // namespace megatron::transformer
