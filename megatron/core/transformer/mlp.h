// MLP (Megatron's transformer/mlp.py): linear_fc1 -> activation -> linear_fc2.
// With a gated linear unit (SwiGLU) linear_fc1 produces [gate; up] (2 * ffn) and the activation halves it.
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/module.h"

namespace megatron::transformer {

class MLP : public MegatronModule {
 public:
  MLP(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend);
  at::Tensor Forward(const at::Tensor& x) const;  // [s, b, h] -> [s, b, h]

 private:
  TransformerConfig config_;
  std::shared_ptr<const BackendProvider> backend_;
  Linear* linear_fc1_;  // weight [ffn (x2 if gated), h]
  Linear* linear_fc2_;  // weight [h, ffn]
};

}  // namespace megatron::transformer
