#include "legacy/model/fused_layer_norm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

namespace megatron::legacy {

MixedFusedLayerNorm::MixedFusedLayerNorm(int64_t hidden, double eps, LayerNorm1p one_p) : eps_(eps), one_p_(one_p) {
  weight_ = RegisterParameter("weight", one_p == LayerNorm1p::kOn ? at::zeros({hidden}) : at::ones({hidden}));
  bias_ = RegisterParameter("bias", at::zeros({hidden}));
}

at::Tensor MixedFusedLayerNorm::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == weight_.size(0), "MixedFusedLayerNorm: input ", x.sizes(), " does not end in ",
              weight_.size(0));
  const at::Tensor weight = one_p_ == LayerNorm1p::kOn ? weight_ + 1 : weight_;
  return at::layer_norm(x, {x.size(-1)}, weight, bias_, eps_);
}

}  // namespace megatron::legacy
