// BiasActivationForward / Backward: CUDA tensors go to the kernels registered by activation_cuda.cc, everything
// else to the float64 reference. Written once before main, read afterwards: no lock.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/activation/activation.h"

namespace megatron::fusions {
namespace {

struct CudaActivationImpl {
  ActivationForwardFn forward = nullptr;
  ActivationBackwardFn backward = nullptr;
};

CudaActivationImpl& Registry() {
  static CudaActivationImpl impl;
  return impl;
}

constexpr const char* kNoCudaMessage =
    ": got CUDA tensors but this binary has no CUDA activation kernels; build with --config=cuda and depend on "
    "//megatron/core/fusions/activation:activation_cuda (or move the tensors to the CPU)";

}  // namespace

void RegisterCudaActivationImpl(ActivationForwardFn forward, ActivationBackwardFn backward) {
  Registry().forward = forward;
  Registry().backward = backward;
}

bool HasCudaActivationImpl() { return Registry().forward != nullptr && Registry().backward != nullptr; }

at::Tensor BiasActivationForward(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind) {
  TORCH_CHECK(x.defined(), "BiasActivationForward: x must be defined");
  if (x.is_cuda()) {
    TORCH_CHECK(HasCudaActivationImpl(), "BiasActivationForward", kNoCudaMessage);
    return Registry().forward(x, bias, kind);
  }
  return BiasActivationForwardReference(x, bias, kind);
}

ActivationBackwardResult BiasActivationBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                                ActivationKind kind) {
  TORCH_CHECK(x.defined(), "BiasActivationBackward: x must be defined");
  if (x.is_cuda()) {
    TORCH_CHECK(HasCudaActivationImpl(), "BiasActivationBackward", kNoCudaMessage);
    return Registry().backward(dy, x, bias, kind);
  }
  return BiasActivationBackwardReference(dy, x, bias, kind);
}

}  // namespace megatron::fusions
