// Shared helpers of the tensor-parallel tests: fp64 inputs identical on every rank, module conversion to fp64,
// and a relative comparison.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/randn.h>

#include <string>

#include "gtest/gtest.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/transformer/module.h"

namespace megatron::tensor_parallel::testing {

// Relative tolerance of the fp64 comparisons: max|actual − expected| ≤ kRtol · max|expected|.
constexpr double kRtol = 1e-10;

// The same N(0, 1) fp64 tensor on every rank.
inline at::Tensor RandnOnAllRanks(at::IntArrayRef shape, uint64_t seed) {
  ManualSeed(seed);
  return at::randn(shape, at::TensorOptions().dtype(at::kDouble));
}

// Converts every parameter to fp64 in place (the module's handles see the change).
inline void ToDouble(transformer::MegatronModule& module) {
  for (at::Tensor p : module.Parameters()) p.set_data(p.detach().to(at::kDouble));
}

inline void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what << ": undefined";
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  ASSERT_EQ(actual.scalar_type(), at::kDouble) << what;
  ASSERT_TRUE(actual.isfinite().all().item<bool>()) << what << ": non-finite values";
  const double scale = expected.abs().max().item<double>();
  const double err = (actual - expected).abs().max().item<double>();
  EXPECT_LE(err, kRtol * scale) << what << ": max abs error " << err << ", max |expected| " << scale;
}

}  // namespace megatron::tensor_parallel::testing
