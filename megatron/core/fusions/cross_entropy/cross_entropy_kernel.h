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

struct CrossEntropyForwardArgs {
  const void* logits = nullptr;    // [n, vocab], dtype
  const int64_t* target = nullptr;  // [n]
  float* loss = nullptr;           // [n]
  float* lse = nullptr;            // [n]
  int64_t n = 0;
  int64_t vocab = 0;
  CrossEntropyDtype dtype = CrossEntropyDtype::kFloat32;
};

struct CrossEntropyBackwardArgs {
  const float* grad_loss = nullptr;  // [n]
  const void* logits = nullptr;      // [n, vocab], dtype
  const int64_t* target = nullptr;   // [n]
  const float* lse = nullptr;        // [n]
  void* grad_logits = nullptr;       // [n, vocab], dtype; may equal logits (in place), must not partially overlap
  int64_t n = 0;
  int64_t vocab = 0;
  CrossEntropyDtype dtype = CrossEntropyDtype::kFloat32;
};

cudaError_t LaunchCrossEntropyForward(const CrossEntropyForwardArgs& args, const CrossEntropyParams& params,
                                      cudaStream_t stream);
cudaError_t LaunchCrossEntropyBackward(const CrossEntropyBackwardArgs& args, const CrossEntropyParams& params,
                                       cudaStream_t stream);

}  // namespace megatron::fusions
