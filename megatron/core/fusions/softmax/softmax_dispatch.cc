// ScaledMaskedSoftmaxForward / ScaledMaskedSoftmaxBackward: CUDA tensors go to the kernels that softmax_cuda.cc registers
// (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/common/cuda_registry.h"
#include "megatron/core/fusions/softmax/softmax.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct SoftmaxTag, SoftmaxForwardFn, SoftmaxBackwardFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/softmax:softmax_cuda";

}  // namespace

void RegisterCudaSoftmaxImpl(SoftmaxForwardFn forward, SoftmaxBackwardFn backward) { Registry::Register(forward, backward); }

bool HasCudaSoftmaxImpl() { return Registry::Has(); }

at::Tensor ScaledMaskedSoftmaxForward(const at::Tensor& x, const at::Tensor& mask, const SoftmaxParams& params) {
  TORCH_CHECK(x.defined(), "ScaledMaskedSoftmaxForward: x must be defined");
  if (x.is_cuda()) return Registry::Forward("ScaledMaskedSoftmaxForward", kCudaTarget)(x, mask, params);
  return ScaledMaskedSoftmaxForwardReference(x, mask, params);
}

at::Tensor ScaledMaskedSoftmaxBackward(const at::Tensor& dy, const at::Tensor& y, const SoftmaxParams& params) {
  TORCH_CHECK(y.defined(), "ScaledMaskedSoftmaxBackward: y must be defined");
  if (y.is_cuda()) return Registry::Backward("ScaledMaskedSoftmaxBackward", kCudaTarget)(dy, y, params);
  return ScaledMaskedSoftmaxBackwardReference(dy, y, params);
}

}  // namespace megatron::fusions
