// Shared by norm_test.cc and norm_gpu_test.cc: tolerances by dtype, inputs, and an every-element comparison.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include "megatron/core/fusions/testing/all_close.h"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace megatron::fusions::testing {

// Hidden sizes: 1, a prime, 16-byte pack alignment +/- 1 element around 128, not a power of two, large + 8.
inline std::vector<int64_t> AwkwardHiddens() { return {1, 7, 127, 128, 129, 1000, 4096 + 8}; }

// Deterministic float32 normal values in [rows, hidden], offset so LayerNorm's mean subtraction matters.
inline at::Tensor RandomInput(std::vector<int64_t> sizes, uint64_t seed, double offset = 0.0) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(sizes, gen, at::TensorOptions().dtype(at::kFloat)) + offset;
}


}  // namespace megatron::fusions::testing
