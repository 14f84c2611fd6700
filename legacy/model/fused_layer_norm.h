// MixedFusedLayerNorm (megatron/legacy/model/fused_layer_norm.py), exported by Megatron as LayerNorm.
// Parameters weight [h] and bias [h]. With apply_layernorm_1p ("zero-centred gamma") the weight starts at 0 and
// the forward uses weight + 1. Apex's fused kernels are replaced by ATen's layer_norm (fp32 statistics).
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/layers.h"

namespace megatron::legacy {

enum class LayerNorm1p { kOff, kOn };

class MixedFusedLayerNorm : public transformer::Norm {
 public:
  MixedFusedLayerNorm(int64_t hidden, double eps, LayerNorm1p one_p = LayerNorm1p::kOff);
  at::Tensor Forward(const at::Tensor& x) const override;

 private:
  double eps_;
  LayerNorm1p one_p_;
  at::Tensor weight_;  // [h]
  at::Tensor bias_;    // [h]
};

}  // namespace megatron::legacy
