// ScaledMaskedSoftmaxForward / Backward: CUDA tensors go to the kernels registered by softmax_cuda.cc, everything
// else to the float64 reference. Written once before main, read afterwards: no lock.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/softmax/softmax.h"

namespace megatron::fusions {
namespace {

struct CudaSoftmaxImpl {
  SoftmaxForwardFn forward = nullptr;
  SoftmaxBackwardFn backward = nullptr;
};

CudaSoftmaxImpl& Registry() {
  static CudaSoftmaxImpl impl;
  return impl;
}

constexpr const char* kNoCudaMessage =
    ": got CUDA tensors but this binary has no CUDA softmax kernels; build with --config=cuda and depend on "
    "//megatron/core/fusions/softmax:softmax_cuda (or move the tensors to the CPU)";

}  // namespace

void RegisterCudaSoftmaxImpl(SoftmaxForwardFn forward, SoftmaxBackwardFn backward) {
  Registry().forward = forward;
  Registry().backward = backward;
}

bool HasCudaSoftmaxImpl() { return Registry().forward != nullptr && Registry().backward != nullptr; }

at::Tensor ScaledMaskedSoftmaxForward(const at::Tensor& x, const at::Tensor& mask, const SoftmaxParams& params) {
  TORCH_CHECK(x.defined(), "ScaledMaskedSoftmaxForward: x must be defined");
  if (x.is_cuda()) {
    TORCH_CHECK(HasCudaSoftmaxImpl(), "ScaledMaskedSoftmaxForward", kNoCudaMessage);
    return Registry().forward(x, mask, params);
  }
  return ScaledMaskedSoftmaxForwardReference(x, mask, params);
}

at::Tensor ScaledMaskedSoftmaxBackward(const at::Tensor& dy, const at::Tensor& y, const SoftmaxParams& params) {
  TORCH_CHECK(y.defined(), "ScaledMaskedSoftmaxBackward: y must be defined");
  if (y.is_cuda()) {
    TORCH_CHECK(HasCudaSoftmaxImpl(), "ScaledMaskedSoftmaxBackward", kNoCudaMessage);
    return Registry().backward(dy, y, params);
  }
  return ScaledMaskedSoftmaxBackwardReference(dy, y, params);
}

}  // namespace megatron::fusions
