// The ATen glue of the CUDA cross-entropy kernels: checks inputs, allocates outputs (caching allocator, the
// logits' device), calls the launchers of cross_entropy_kernel.h on the current stream of that device,
// TORCH_CHECKs their cudaError_t, and registers itself as the CUDA implementation of CrossEntropyForward /
// CrossEntropyBackward and of the vocabulary-shard pieces (cross_entropy.h) before main runs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <limits>

#include "megatron/core/fusions/cross_entropy/cross_entropy.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy_kernel.h"

namespace megatron::fusions {
namespace {

CrossEntropyDtype ToKernelDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return CrossEntropyDtype::kFloat32;
    case at::kBFloat16:
      return CrossEntropyDtype::kBFloat16;
    case at::kHalf:
      return CrossEntropyDtype::kFloat16;
    default:
      TORCH_CHECK(false, "CUDA cross-entropy: unsupported dtype ", t, " (float32, bfloat16 or float16)");
  }
}

// The kernels index columns with int and launch one block per row (gridDim.x < 2^31).
void CheckKernelLimits(const at::Tensor& logits) {
  TORCH_CHECK(logits.is_cuda(), "CUDA cross-entropy: logits must be a CUDA tensor, got ", logits.device());
  TORCH_CHECK(logits.size(1) <= std::numeric_limits<int>::max() &&
                  logits.size(0) <= std::numeric_limits<int>::max(),
              "CUDA cross-entropy: logits ", logits.sizes(), " exceed the kernels' limits (n and V below 2^31)");
}

CrossEntropyForwardResult CudaCrossEntropyForward(const at::Tensor& logits, const at::Tensor& target,
                                                  const CrossEntropyParams& params) {
  CheckCrossEntropyForwardInputs(logits, target, params, /*allow_float64=*/false);
  CheckKernelLimits(logits);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t n = logits.size(0);
  CrossEntropyForwardResult out;
  out.loss = at::empty({n}, logits.options().dtype(at::kFloat));
  out.lse = at::empty({n}, logits.options().dtype(at::kFloat));
  CrossEntropyForwardArgs args;
  args.logits = logits.data_ptr();
  args.target = target.data_ptr<int64_t>();
  args.loss = out.loss.data_ptr<float>();
  args.lse = out.lse.data_ptr<float>();
  args.n = n;
  args.vocab = logits.size(1);
  args.shard = WholeVocab(args.vocab);
  args.dtype = ToKernelDtype(logits.scalar_type());
  const cudaError_t err =
      LaunchCrossEntropyForward(args, params, c10::cuda::getCurrentCUDAStream(logits.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA cross-entropy forward (logits ", logits.sizes(), " ", logits.scalar_type(),
              "): ", cudaGetErrorString(err));
  return out;
}

at::Tensor CudaCrossEntropyShardPartials(const at::Tensor& logits, const at::Tensor& target, const VocabShard& shard,
                                        const CrossEntropyParams& params) {
  CheckCrossEntropyShardInputs(logits, target, shard, params, /*allow_float64=*/false);
  CheckKernelLimits(logits);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t n = logits.size(0);
  at::Tensor partials = at::empty({3, n}, logits.options().dtype(at::kFloat));
  CrossEntropyForwardArgs args;
  args.logits = logits.data_ptr();
  args.target = target.data_ptr<int64_t>();
  args.partials = partials.data_ptr<float>();
  args.n = n;
  args.vocab = logits.size(1);
  args.shard = shard;
  args.dtype = ToKernelDtype(logits.scalar_type());
  const cudaError_t err =
      LaunchCrossEntropyForward(args, params, c10::cuda::getCurrentCUDAStream(logits.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA cross-entropy shard partials (logits ", logits.sizes(), " ",
              logits.scalar_type(), ", shard start ", shard.start, " of ", shard.full_vocab,
              "): ", cudaGetErrorString(err));
  return partials;
}

at::Tensor CudaCrossEntropyShardBackward(const at::Tensor& grad_loss, const at::Tensor& logits,
                                         const at::Tensor& target, const at::Tensor& lse, const VocabShard& shard,
                                         const CrossEntropyParams& params, GradLogitsBuffer buffer) {
  CheckCrossEntropyShardBackwardInputs(grad_loss, logits, target, lse, shard, params, /*allow_float64=*/false);
  CheckKernelLimits(logits);
  const c10::cuda::CUDAGuard guard(logits.device());
  // In place: the returned tensor is `logits` itself (same storage, same data pointer).
  at::Tensor grad = buffer == GradLogitsBuffer::kOverwriteLogits ? logits : at::empty(logits.sizes(), logits.options());
  CrossEntropyBackwardArgs args;
  args.grad_loss = grad_loss.data_ptr<float>();
  args.logits = logits.data_ptr();
  args.target = target.data_ptr<int64_t>();
  args.lse = lse.data_ptr<float>();
  args.grad_logits = grad.data_ptr();
  args.n = logits.size(0);
  args.vocab = logits.size(1);
  args.shard = shard;
  args.dtype = ToKernelDtype(logits.scalar_type());
  const cudaError_t err =
      LaunchCrossEntropyBackward(args, params, c10::cuda::getCurrentCUDAStream(logits.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA cross-entropy backward (logits ", logits.sizes(), " ",
              logits.scalar_type(), "): ", cudaGetErrorString(err));
  return grad;
}

at::Tensor CudaCrossEntropyBackward(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                    const at::Tensor& lse, const CrossEntropyParams& params,
                                    GradLogitsBuffer buffer) {
  CheckCrossEntropyBackwardInputs(grad_loss, logits, target, lse, params, /*allow_float64=*/false);
  return CudaCrossEntropyShardBackward(grad_loss, logits, target, lse, WholeVocab(logits.size(1)), params, buffer);
}

// Static registration (see cross_entropy.h); the BUILD target is alwayslink so the linker keeps this object.
const bool kRegistered = [] {
  RegisterCudaCrossEntropyImpl(&CudaCrossEntropyForward, &CudaCrossEntropyBackward);
  RegisterCudaCrossEntropyShardImpl(&CudaCrossEntropyShardPartials, &CudaCrossEntropyShardBackward);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
