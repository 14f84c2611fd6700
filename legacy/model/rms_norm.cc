#include "legacy/model/rms_norm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/rsqrt.h>

namespace megatron::legacy {

RMSNorm::RMSNorm(int64_t hidden, double eps) : eps_(eps) { weight_ = RegisterParameter("weight", at::ones({hidden})); }

at::Tensor RMSNorm::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == weight_.size(0), "RMSNorm: input ", x.sizes(), " does not end in ", weight_.size(0));
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_)).to(x.scalar_type());
  return normed * weight_;
}

}  // namespace megatron::legacy
