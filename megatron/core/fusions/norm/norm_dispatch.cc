// NormForward / NormBackward: CUDA tensors go to the kernels registered by norm_cuda.cc, everything else to the
// float64 reference. The registry is two function pointers written once from a static initialiser (before main)
// and only read afterwards, so it needs no lock.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/norm/norm.h"

namespace megatron::fusions {
namespace {

struct CudaNormImpl {
  NormForwardFn forward = nullptr;
  NormBackwardFn backward = nullptr;
};

CudaNormImpl& Registry() {
  static CudaNormImpl impl;  // function-local: safe to use from other translation units' static initialisers
  return impl;
}

constexpr const char* kNoCudaMessage =
    ": got CUDA tensors but this binary has no CUDA norm kernels; build with --config=cuda and depend on "
    "//megatron/core/fusions/norm:norm_cuda (or move the tensors to the CPU)";

}  // namespace

void RegisterCudaNormImpl(NormForwardFn forward, NormBackwardFn backward) {
  Registry().forward = forward;
  Registry().backward = backward;
}

bool HasCudaNormImpl() { return Registry().forward != nullptr && Registry().backward != nullptr; }

NormForwardResult NormForward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                              const NormParams& params) {
  TORCH_CHECK(x.defined(), "NormForward: x must be defined");
  if (x.is_cuda()) {
    TORCH_CHECK(HasCudaNormImpl(), "NormForward", kNoCudaMessage);
    return Registry().forward(x, gamma, beta, params);
  }
  return NormForwardReference(x, gamma, beta, params);
}

NormBackwardResult NormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params) {
  TORCH_CHECK(x.defined(), "NormBackward: x must be defined");
  if (x.is_cuda()) {
    TORCH_CHECK(HasCudaNormImpl(), "NormBackward", kNoCudaMessage);
    return Registry().backward(dy, x, gamma, mean, rstd, params);
  }
  return NormBackwardReference(dy, x, gamma, mean, rstd, params);
}

}  // namespace megatron::fusions
