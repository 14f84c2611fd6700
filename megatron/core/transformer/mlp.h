// MLP (Megatron's transformer/mlp.py): linear_fc1 -> activation -> linear_fc2.
// With a gated linear unit (SwiGLU) linear_fc1 produces [gate; up] (2 * ffn) and the activation halves it.
// Under tensor parallelism fc1 is column-parallel (a SwiGLU shard holds [gate_r; up_r], drawn from the full
// [gate; up] weight) and fc2 row-parallel.
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/tensor_parallel/layers.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"

namespace megatron::transformer {

class MLP : public MegatronModule {
 public:
  MLP(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
      const ModelParallel& parallel = {});
  at::Tensor Forward(const at::Tensor& x) const;  // [s, b, h] -> [s, b, h]

 private:
  TransformerConfig config_;
  std::shared_ptr<const BackendProvider> backend_;
  // Exactly one of each pair is set: the plain layer without TP, the parallel one with it.
  Linear* linear_fc1_ = nullptr;  // weight [ffn (x2 if gated), h]
  Linear* linear_fc2_ = nullptr;  // weight [h, ffn]
  tensor_parallel::ColumnParallelLinear* linear_fc1_tp_ = nullptr;  // weight [ffn/tp (x2 if gated), h]
  tensor_parallel::RowParallelLinear* linear_fc2_tp_ = nullptr;     // weight [h, ffn/tp]
};

}  // namespace megatron::transformer
