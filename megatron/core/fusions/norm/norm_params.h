// The parameters of a norm, shared by the CUDA kernels (norm_kernel.cu), the reference (norm_reference.cc) and
// the ATen-facing contract (norm.h), so eps and the gamma convention cannot drift between them. Plain C++: this
// header is compiled by nvcc as well as by the host compiler and must not include libtorch.
#pragma once

namespace megatron::fusions {

enum class NormKind {
  // y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps), var the biased (1/hidden) variance.
  kLayerNorm,
  // y = x * rstd * gamma, rstd = 1 / sqrt(mean(x^2) + eps); no mean subtraction, no beta.
  kRMSNorm,
};

struct NormParams {
  NormKind kind = NormKind::kRMSNorm;
  // Added to the variance (LayerNorm) or the mean square (RMSNorm) under the square root.
  double eps = 1e-5;
  // Megatron's --apply_layernorm_1p: the stored gamma is an offset from one, y uses (1 + gamma). Lets weight decay
  // pull the effective scale towards 1 instead of 0. dgamma is unchanged (d(1 + gamma) / dgamma = 1).
  bool zero_centered_gamma = false;
};

}  // namespace megatron::fusions
