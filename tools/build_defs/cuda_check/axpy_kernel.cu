// Grid-stride axpy; 256 threads per block is a common default with no tuning intended (this is a build check).
#include "tools/build_defs/cuda_check/axpy.h"

namespace megatron::build_defs {
namespace {

__global__ void AxpyKernel(float a, const float* __restrict__ x, float* __restrict__ y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] += a * x[i];
}

}  // namespace

cudaError_t LaunchAxpy(float a, const float* x, float* y, int n, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int blocks = (n + kThreads - 1) / kThreads < 1024 ? (n + kThreads - 1) / kThreads : 1024;
  if (n <= 0) return cudaSuccess;
  AxpyKernel<<<blocks, kThreads, 0, stream>>>(a, x, y, n);
  return cudaGetLastError();
}

}  // namespace megatron::build_defs
