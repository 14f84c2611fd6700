// CrossEntropyForward / CrossEntropyBackward: CUDA tensors go to the kernels registered by cross_entropy_cuda.cc,
// everything else to the float64 reference. The registry is two function pointers written once from a static
// initialiser (before main) and only read afterwards, so it needs no lock.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/cross_entropy/cross_entropy.h"

namespace megatron::fusions {
namespace {

struct CudaCrossEntropyImpl {
  CrossEntropyForwardFn forward = nullptr;
  CrossEntropyBackwardFn backward = nullptr;
};

CudaCrossEntropyImpl& Registry() {
  static CudaCrossEntropyImpl impl;  // function-local: safe to use from other translation units' initialisers
  return impl;
}

constexpr const char* kNoCudaMessage =
    ": got CUDA tensors but this binary has no CUDA cross-entropy kernels; build with --config=cuda and depend on "
    "//megatron/core/fusions/cross_entropy:cross_entropy_cuda (or move the tensors to the CPU)";

}  // namespace

void RegisterCudaCrossEntropyImpl(CrossEntropyForwardFn forward, CrossEntropyBackwardFn backward) {
  Registry().forward = forward;
  Registry().backward = backward;
}

bool HasCudaCrossEntropyImpl() { return Registry().forward != nullptr && Registry().backward != nullptr; }

CrossEntropyForwardResult CrossEntropyForward(const at::Tensor& logits, const at::Tensor& target,
                                              const CrossEntropyParams& params) {
  TORCH_CHECK(logits.defined(), "CrossEntropyForward: logits must be defined");
  if (logits.is_cuda()) {
    TORCH_CHECK(HasCudaCrossEntropyImpl(), "CrossEntropyForward", kNoCudaMessage);
    return Registry().forward(logits, target, params);
  }
  return CrossEntropyForwardReference(logits, target, params);
}

at::Tensor CrossEntropyBackward(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                const at::Tensor& lse, const CrossEntropyParams& params, GradLogitsBuffer buffer) {
  TORCH_CHECK(logits.defined(), "CrossEntropyBackward: logits must be defined");
  if (logits.is_cuda()) {
    TORCH_CHECK(HasCudaCrossEntropyImpl(), "CrossEntropyBackward", kNoCudaMessage);
    return Registry().backward(grad_loss, logits, target, lse, params, buffer);
  }
  return CrossEntropyBackwardReference(grad_loss, logits, target, lse, params, buffer);
}

}  // namespace megatron::fusions
