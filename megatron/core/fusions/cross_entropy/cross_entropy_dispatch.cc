// CrossEntropyForward / CrossEntropyBackward: CUDA tensors go to the kernels that cross_entropy_cuda.cc registers
// (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/common/cuda_registry.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct CrossEntropyTag, CrossEntropyForwardFn, CrossEntropyBackwardFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/cross_entropy:cross_entropy_cuda";

}  // namespace

void RegisterCudaCrossEntropyImpl(CrossEntropyForwardFn forward, CrossEntropyBackwardFn backward) { Registry::Register(forward, backward); }

bool HasCudaCrossEntropyImpl() { return Registry::Has(); }

CrossEntropyForwardResult CrossEntropyForward(const at::Tensor& logits, const at::Tensor& target,
                                              const CrossEntropyParams& params) {
  TORCH_CHECK(logits.defined(), "CrossEntropyForward: logits must be defined");
  if (logits.is_cuda()) return Registry::Forward("CrossEntropyForward", kCudaTarget)(logits, target, params);
  return CrossEntropyForwardReference(logits, target, params);
}

at::Tensor CrossEntropyBackward(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                const at::Tensor& lse, const CrossEntropyParams& params, GradLogitsBuffer buffer) {
  TORCH_CHECK(logits.defined(), "CrossEntropyBackward: logits must be defined");
  if (logits.is_cuda()) return Registry::Backward("CrossEntropyBackward", kCudaTarget)(grad_loss, logits, target, lse, params, buffer);
  return CrossEntropyBackwardReference(grad_loss, logits, target, lse, params, buffer);
}

}  // namespace megatron::fusions
