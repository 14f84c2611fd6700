// CrossEntropyForward / CrossEntropyBackward and the shard pieces: CUDA tensors go to the kernels that
// cross_entropy_cuda.cc registers (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/common/cuda_registry.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct CrossEntropyTag, CrossEntropyForwardFn, CrossEntropyBackwardFn>;
using ShardRegistry =
    common::CudaImplRegistry<struct CrossEntropyShardTag, CrossEntropyShardPartialsFn, CrossEntropyShardBackwardFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/cross_entropy:cross_entropy_cuda";

}  // namespace

void RegisterCudaCrossEntropyImpl(CrossEntropyForwardFn forward, CrossEntropyBackwardFn backward) { Registry::Register(forward, backward); }

void RegisterCudaCrossEntropyShardImpl(CrossEntropyShardPartialsFn partials, CrossEntropyShardBackwardFn backward) {
  ShardRegistry::Register(partials, backward);
}

bool HasCudaCrossEntropyImpl() { return Registry::Has() && ShardRegistry::Has(); }

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

at::Tensor CrossEntropyShardPartials(const at::Tensor& logits_shard, const at::Tensor& target,
                                     const VocabShard& shard, const CrossEntropyParams& params) {
  TORCH_CHECK(logits_shard.defined(), "CrossEntropyShardPartials: logits must be defined");
  if (logits_shard.is_cuda()) {
    return ShardRegistry::Forward("CrossEntropyShardPartials", kCudaTarget)(logits_shard, target, shard, params);
  }
  return CrossEntropyShardPartialsReference(logits_shard, target, shard, params);
}

at::Tensor CrossEntropyShardBackward(const at::Tensor& grad_loss, const at::Tensor& logits_shard,
                                     const at::Tensor& target, const at::Tensor& lse, const VocabShard& shard,
                                     const CrossEntropyParams& params, GradLogitsBuffer buffer) {
  TORCH_CHECK(logits_shard.defined(), "CrossEntropyShardBackward: logits must be defined");
  if (logits_shard.is_cuda()) {
    return ShardRegistry::Backward("CrossEntropyShardBackward", kCudaTarget)(grad_loss, logits_shard, target, lse,
                                                                            shard, params, buffer);
  }
  return CrossEntropyShardBackwardReference(grad_loss, logits_shard, target, lse, shard, params, buffer);
}

}  // namespace megatron::fusions
