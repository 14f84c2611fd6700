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
  if (x.is_cuda()) return Registry::Forward("NormForward", kCudaTarget)(x, gamma, beta, params);
  return NormForwardReference(x, gamma, beta, params);
}

NormBackwardResult NormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params) {
  TORCH_CHECK(x.defined(), "NormBackward: x must be defined");
  if (x.is_cuda()) return Registry::Backward("NormBackward", kCudaTarget)(dy, x, gamma, mean, rstd, params);
  return NormBackwardReference(dy, x, gamma, mean, rstd, params);
}

}  // namespace megatron::fusions
