// GPU tests skip (GTEST_SKIP, never a silent pass) on machines without a CUDA device: CI builds and runs them on
// CPU machines, the GPU machine runs them for real.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

namespace megatron::fusions::testing {

inline bool HasCudaDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace megatron::fusions::testing

#define MEGATRON_SKIP_WITHOUT_CUDA_DEVICE()                   \
  if (!::megatron::fusions::testing::HasCudaDevice()) \
  GTEST_SKIP() << "no CUDA device on this machine"
