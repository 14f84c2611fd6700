// NormForward / NormBackward: CUDA tensors go to the kernels that norm_cuda.cc registers
// (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/common/cuda_registry.h"
#include "megatron/core/fusions/norm/norm.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct NormTag, NormForwardFn, NormBackwardFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/norm:norm_cuda";

}  // namespace

void RegisterCudaNormImpl(NormForwardFn forward, NormBackwardFn backward) { Registry::Register(forward, backward); }

bool HasCudaNormImpl() { return Registry::Has(); }

NormForwardResult NormForward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                              const NormParams& params) {
  TORCH_CHECK(x.defined(), "NormForward: x must be defined");
  if (x.is_cuda()) return Registry::Forward("NormForward", kCudaTarget)(x, at::Tensor(), gamma, beta, params);
  return NormForwardReference(x, gamma, beta, params);
}

NormBackwardResult NormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params) {
  TORCH_CHECK(x.defined(), "NormBackward: x must be defined");
  if (x.is_cuda()) {
    return Registry::Backward("NormBackward", kCudaTarget)(dy, at::Tensor(), x, gamma, mean, rstd, params);
  }
  return NormBackwardReference(dy, x, gamma, mean, rstd, params);
}

NormForwardResult ResidualAddNormForward(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& gamma,
                                         const at::Tensor& beta, const NormParams& params) {
  TORCH_CHECK(x.defined() && residual.defined(), "ResidualAddNormForward: x and residual must be defined");
  if (x.is_cuda()) {
    return Registry::Forward("ResidualAddNormForward", kCudaTarget)(x, residual, gamma, beta, params);
  }
  return ResidualAddNormForwardReference(x, residual, gamma, beta, params);
}

NormBackwardResult ResidualAddNormBackward(const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& h,
                                           const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
                                           const NormParams& params) {
  TORCH_CHECK(h.defined(), "ResidualAddNormBackward: h must be defined");
  if (h.is_cuda()) {
    return Registry::Backward("ResidualAddNormBackward", kCudaTarget)(dy, dh, h, gamma, mean, rstd, params);
  }
  return ResidualAddNormBackwardReference(dy, dh, h, gamma, mean, rstd, params);
}

}  // namespace megatron::fusions
