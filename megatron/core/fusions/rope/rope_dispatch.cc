// RopeForward / Backward: CUDA tensors go to the kernels registered by rope_cuda.cc, everything
// else to the float64 reference. Written once before main, read afterwards: no lock.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/rope/rope.h"

namespace megatron::fusions {
namespace {

struct CudaRopeImpl {
  RopeFn forward = nullptr;
  RopeFn backward = nullptr;
};

CudaRopeImpl& Registry() {
  static CudaRopeImpl impl;
  return impl;
}

constexpr const char* kNoCudaMessage =
    ": got CUDA tensors but this binary has no CUDA rope kernels; build with --config=cuda and depend on "
    "//megatron/core/fusions/rope:rope_cuda (or move the tensors to the CPU)";

}  // namespace

void RegisterCudaRopeImpl(RopeFn forward, RopeFn backward) {
  Registry().forward = forward;
  Registry().backward = backward;
}

bool HasCudaRopeImpl() { return Registry().forward != nullptr && Registry().backward != nullptr; }

at::Tensor RopeForward(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params) {
  TORCH_CHECK(t.defined(), "RopeForward: t must be defined");
  if (t.is_cuda()) {
    TORCH_CHECK(HasCudaRopeImpl(), "RopeForward", kNoCudaMessage);
    return Registry().forward(t, freqs, params);
  }
  return RopeForwardReference(t, freqs, params);
}

at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& freqs, const RopeParams& params) {
  TORCH_CHECK(dy.defined(), "RopeBackward: dy must be defined");
  if (dy.is_cuda()) {
    TORCH_CHECK(HasCudaRopeImpl(), "RopeBackward", kNoCudaMessage);
    return Registry().backward(dy, freqs, params);
  }
  return RopeBackwardReference(dy, freqs, params);
}

}  // namespace megatron::fusions
