// The cuda_library macro's own check: one trivial kernel, y = a * x + y, built by nvcc for sm_90 and linked
// into a GoogleTest binary by the host compiler. If this builds under --config=cuda and passes on the GPU
// machine, the macro (flags, PIC objects, cudart linkage) works for real kernels.
#pragma once

#include <cuda_runtime_api.h>

namespace megatron::build_defs {

// y[i] += a * x[i] for i < n, on `stream`. x and y are device pointers.
cudaError_t LaunchAxpy(float a, const float* x, float* y, int n, cudaStream_t stream);

}  // namespace megatron::build_defs
