// BiasActivationForward / BiasActivationBackward: CUDA tensors go to the kernels that activation_cuda.cc registers
// (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/common/cuda_registry.h"
#include "megatron/core/fusions/activation/activation.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct ActivationTag, ActivationForwardFn, ActivationBackwardFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/activation:activation_cuda";

}  // namespace

void RegisterCudaActivationImpl(ActivationForwardFn forward, ActivationBackwardFn backward) { Registry::Register(forward, backward); }

bool HasCudaActivationImpl() { return Registry::Has(); }

at::Tensor BiasActivationForward(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind) {
  TORCH_CHECK(x.defined(), "BiasActivationForward: x must be defined");
  if (x.is_cuda()) return Registry::Forward("BiasActivationForward", kCudaTarget)(x, bias, kind);
  return BiasActivationForwardReference(x, bias, kind);
}

ActivationBackwardResult BiasActivationBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                                ActivationKind kind) {
  TORCH_CHECK(x.defined(), "BiasActivationBackward: x must be defined");
  if (x.is_cuda()) return Registry::Backward("BiasActivationBackward", kCudaTarget)(dy, x, bias, kind);
  return BiasActivationBackwardReference(dy, x, bias, kind);
}

}  // namespace megatron::fusions
