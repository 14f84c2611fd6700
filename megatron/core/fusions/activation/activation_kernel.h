// Launchers for the CUDA bias + activation kernels (activation_kernel.cu): raw device pointers, no libtorch.
// Semantics are activation.h's; activation_cuda.cc checks, allocates and calls these on the current stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatron/core/fusions/activation/activation_params.h"

namespace megatron::fusions {

enum class ActivationDtype { kFloat32, kBFloat16, kFloat16 };

struct ActivationArgs {
  const void* x = nullptr;     // [rows, cols]
  const void* bias = nullptr;  // [cols] or nullptr
  const void* dy = nullptr;    // backward: [rows, cols] (GeLU) or [rows, cols / 2] (SwiGLU)
  void* out = nullptr;         // forward: y, y's shape; backward: dx [rows, cols]
  int64_t rows = 0;
  int64_t cols = 0;            // x's last dimension (2h for SwiGLU)
  ActivationDtype dtype = ActivationDtype::kFloat32;
};

cudaError_t LaunchActivationForward(const ActivationArgs& args, ActivationKind kind, cudaStream_t stream);
cudaError_t LaunchActivationBackward(const ActivationArgs& args, ActivationKind kind, cudaStream_t stream);

}  // namespace megatron::fusions
