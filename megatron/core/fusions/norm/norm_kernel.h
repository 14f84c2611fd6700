// Launchers for the CUDA norm kernels (norm_kernel.cu): raw device pointers, no libtorch, so nvcc compiles the
// device code without ATen's headers. Semantics are those of norm.h; norm_cuda.cc checks shapes and dtypes,
// allocates, and calls these on the current stream. All pointers are device pointers, rows-major contiguous.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "megatron/core/fusions/norm/norm_params.h"

namespace megatron::fusions {

enum class NormDtype { kFloat32, kBFloat16, kFloat16 };

struct NormForwardArgs {
  const void* x = nullptr;         // [rows, hidden], x_dtype
  const void* residual = nullptr;  // [rows, hidden], x_dtype; nullptr: the plain norm of x
  const void* gamma = nullptr;     // [hidden], w_dtype
  const void* beta = nullptr;      // [hidden], w_dtype; nullptr: no shift (always nullptr for RMSNorm)
  void* y = nullptr;               // [rows, hidden], x_dtype; must not alias x, residual or h
  void* h = nullptr;               // [rows, hidden], x_dtype: x + residual; with residual only, aliasing nothing
  float* mean = nullptr;        // [rows]; LayerNorm only (nullptr for RMSNorm)
  float* rstd = nullptr;        // [rows]
  int64_t rows = 0;
  int64_t hidden = 0;
  NormDtype x_dtype = NormDtype::kFloat32;
  NormDtype w_dtype = NormDtype::kFloat32;  // float32 or x_dtype
};

struct NormBackwardArgs {
  const void* dy = nullptr;     // [rows, hidden], x_dtype
  const void* dh = nullptr;     // [rows, hidden], x_dtype; nullptr: none. Added to dx (residual add + norm)
  const void* x = nullptr;      // [rows, hidden], x_dtype (h, for the residual add + norm)
  const void* gamma = nullptr;  // [hidden], w_dtype
  const float* mean = nullptr;  // [rows]; LayerNorm only
  const float* rstd = nullptr;  // [rows]
  void* dx = nullptr;           // [rows, hidden], x_dtype
  void* dgamma = nullptr;       // [hidden], w_dtype
  void* dbeta = nullptr;        // [hidden], w_dtype; LayerNorm only (nullptr for RMSNorm)
  float* workspace = nullptr;   // NormBackwardWorkspaceFloats(...) floats, contents ignored
  int64_t rows = 0;
  int64_t hidden = 0;
  NormDtype x_dtype = NormDtype::kFloat32;
  NormDtype w_dtype = NormDtype::kFloat32;
  int num_sms = 132;  // of the device; sizes the column-reduction grid (H100 SXM has 132)
};

cudaError_t LaunchNormForward(const NormForwardArgs& args, const NormParams& params, cudaStream_t stream);

// Floats of scratch the backward needs: per-block partial sums of dgamma (and dbeta) before the final reduction.
size_t NormBackwardWorkspaceFloats(int64_t rows, int64_t hidden, int num_sms);

cudaError_t LaunchNormBackward(const NormBackwardArgs& args, const NormParams& params, cudaStream_t stream);

}  // namespace megatron::fusions
