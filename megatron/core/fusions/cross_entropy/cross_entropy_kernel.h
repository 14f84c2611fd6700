// Launchers for the CUDA cross-entropy kernels (cross_entropy_kernel.cu): raw device pointers, no libtorch, so
// nvcc compiles the device code without ATen's headers. Semantics are those of cross_entropy.h;
// cross_entropy_cuda.cc checks shapes and dtypes, allocates, and calls these on the current stream.
// All pointers are device pointers; [n, vocab] tensors are row-major contiguous.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatron/core/fusions/cross_entropy/cross_entropy_params.h"

namespace megatron::fusions {

enum class CrossEntropyDtype { kFloat32, kBFloat16, kFloat16 };

// With partials == nullptr the forward writes loss and lse of a whole vocabulary (shard must be WholeVocab(vocab));
// otherwise it writes only the shard's per-row partial statistics (cross_entropy.h, CrossEntropyShardPartials):
// partials[0 * n + i] the shard's log-sum-exp, [1 * n + i] the target's logit if it lies in the shard (else 0),
// [2 * n + i] the sum of the shard's valid logits.
struct CrossEntropyForwardArgs {
  const void* logits = nullptr;    // [n, vocab], dtype (vocab: this shard's columns)
  const int64_t* target = nullptr;  // [n], full-vocabulary ids
  float* loss = nullptr;           // [n]; whole vocabulary only
  float* lse = nullptr;            // [n]; whole vocabulary only
  float* partials = nullptr;       // [3, n]; shards only
  int64_t n = 0;
  int64_t vocab = 0;
  VocabShard shard;
  CrossEntropyDtype dtype = CrossEntropyDtype::kFloat32;
};

struct CrossEntropyBackwardArgs {
  const float* grad_loss = nullptr;  // [n]
  const void* logits = nullptr;      // [n, vocab], dtype
  const int64_t* target = nullptr;   // [n]
  const float* lse = nullptr;        // [n], over the full vocabulary
  void* grad_logits = nullptr;       // [n, vocab], dtype; may equal logits (in place), must not partially overlap
  int64_t n = 0;
  int64_t vocab = 0;
  VocabShard shard;                  // WholeVocab(vocab) for the single-process loss
  CrossEntropyDtype dtype = CrossEntropyDtype::kFloat32;
};

cudaError_t LaunchCrossEntropyForward(const CrossEntropyForwardArgs& args, const CrossEntropyParams& params,
                                      cudaStream_t stream);
cudaError_t LaunchCrossEntropyBackward(const CrossEntropyBackwardArgs& args, const CrossEntropyParams& params,
                                       cudaStream_t stream);

}  // namespace megatron::fusions
