// Launcher for the CUDA rotary position embedding (rope_kernel.cu): raw device pointers, no libtorch. Semantics
// are rope.h's; rope_cuda.cc checks, allocates and calls this on the current stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatron/core/fusions/rope/rope_params.h"

namespace megatron::fusions {

enum class RopeDtype { kFloat32, kBFloat16, kFloat16 };

struct RopeArgs {
  const void* in = nullptr;     // t (forward) or dy (backward): [s, b, n, d], element strides below, last dim 1
  const float* freqs = nullptr; // [s, r]
  void* out = nullptr;          // contiguous [s, b, n, d]
  int64_t s = 0, b = 0, n = 0, d = 0, r = 0;
  int64_t stride_s = 0, stride_b = 0, stride_n = 0;  // of `in`, in elements
  RopeDtype dtype = RopeDtype::kFloat32;
  bool backward = false;  // apply the transpose (rope.h)
};

cudaError_t LaunchRope(const RopeArgs& args, const RopeParams& params, cudaStream_t stream);

}  // namespace megatron::fusions
