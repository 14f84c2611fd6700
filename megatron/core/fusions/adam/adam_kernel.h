// Launcher of the multi-tensor AdamW kernel (adam_kernel.cu): raw device pointers, no libtorch. Semantics are
// adam.h's; adam_cuda.cc checks the tensors, builds the tables below and calls this on the current stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatron/core/fusions/adam/adam_params.h"

namespace megatron::fusions {

enum class AdamWDtype { kNone, kFloat32, kBFloat16, kFloat16 };

// One tensor of the list (device pointers).
struct AdamWTensorMeta {
  float* param;
  const void* grad;
  float* exp_avg;
  float* exp_avg_sq;
  void* model_copy;  // nullptr without copies
  int64_t numel;
  int32_t decay;     // 1: weight decay
  int32_t aligned;   // 1: every pointer 16-byte aligned, so 4-element packs are legal
};

// One block's work: elements [chunk * kAdamWChunkElems, +kAdamWChunkElems) of tensor `tensor`.
struct AdamWChunk {
  int32_t tensor;
  int32_t chunk;
};

// Elements per block. 64 per thread at 256 threads: enough work per block to hide the launch of a block, small
// enough that a 124M-parameter model gives ~7.6K blocks (many waves on 132 SMs, so tails balance).
constexpr int64_t kAdamWChunkElems = 16384;

struct AdamWLaunchArgs {
  const AdamWTensorMeta* tensors = nullptr;  // device
  const AdamWChunk* chunks = nullptr;        // device
  int64_t num_chunks = 0;
  AdamWDtype grad_dtype = AdamWDtype::kFloat32;
  AdamWDtype copy_dtype = AdamWDtype::kNone;
};

cudaError_t LaunchMultiTensorAdamW(const AdamWLaunchArgs& args, const AdamWScalars& scalars, cudaStream_t stream);

}  // namespace megatron::fusions
