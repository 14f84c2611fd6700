// Launchers for the CUDA scaled masked softmax (softmax_kernel.cu): raw device pointers, no libtorch. Semantics
// are softmax.h's; softmax_cuda.cc checks, allocates and calls these on the current stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatron/core/fusions/softmax/softmax_params.h"

namespace megatron::fusions {

enum class SoftmaxDtype { kFloat32, kBFloat16, kFloat16 };

struct SoftmaxForwardArgs {
  const void* x = nullptr;        // [rows, sk], rows = batch * heads * sq
  const uint8_t* mask = nullptr;  // kExplicit: bool [mask_batches, sq, sk] (mask_batches 1 or batch)
  void* y = nullptr;              // [rows, sk]; must not alias x
  int64_t rows = 0;
  int64_t sq = 0;
  int64_t sk = 0;
  int64_t heads = 1;          // kExplicit: np (row r belongs to batch r / (heads * sq))
  int64_t mask_batches = 1;   // kExplicit: 1 (broadcast) or batch
  SoftmaxDtype dtype = SoftmaxDtype::kFloat32;
};

struct SoftmaxBackwardArgs {
  const void* dy = nullptr;  // [rows, sk]
  const void* y = nullptr;   // [rows, sk], the forward's output
  void* dx = nullptr;        // [rows, sk]
  int64_t rows = 0;
  int64_t sq = 0;
  int64_t sk = 0;
  SoftmaxDtype dtype = SoftmaxDtype::kFloat32;
};

cudaError_t LaunchSoftmaxForward(const SoftmaxForwardArgs& args, const SoftmaxParams& params, cudaStream_t stream);
cudaError_t LaunchSoftmaxBackward(const SoftmaxBackwardArgs& args, const SoftmaxParams& params,
                                  cudaStream_t stream);

}  // namespace megatron::fusions
