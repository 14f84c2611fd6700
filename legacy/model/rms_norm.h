// RMSNorm (megatron/legacy/model/rms_norm.py): y = (x_fp32 * rsqrt(mean(x_fp32^2) + eps)).type_as(x) * weight.
// Note the order: the legacy module casts back to x's dtype before the weight multiply (core multiplies in fp32);
// in fp32 the two agree exactly. weight [h], initialised to 1. The 1p form is not supported (as in Megatron).
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/layers.h"

namespace megatron::legacy {

class RMSNorm : public transformer::Norm {
 public:
  RMSNorm(int64_t hidden, double eps);
  at::Tensor Forward(const at::Tensor& x) const override;

 private:
  double eps_;
  at::Tensor weight_;  // [h]
};

}  // namespace megatron::legacy
