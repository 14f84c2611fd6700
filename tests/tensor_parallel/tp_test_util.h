// Shared helpers of the tensor-parallel tests: fp64 inputs identical on every rank, module conversion to fp64,
// a relative comparison, and a GPT parameter's full gradient assembled from the TP shards.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/randn.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

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

// The full (TP=1) gradient of GPT parameter `name` from this rank's shard of it; `tp` null or of size 1: as is.
inline at::Tensor FullGrad(const std::string& name, const at::Tensor& shard_grad,
                           const transformer::TransformerConfig& config, distributed::Group* tp) {
  if (tp == nullptr || tp->size() == 1) return shard_grad;
  const auto ends = [&](const char* suffix) { return absl::EndsWith(name, suffix); };
  if (ends("linear_proj.weight") || ends("linear_fc2.weight")) return AllGatherAlong(shard_grad, 1, *tp, "test");
  if (ends("linear_fc1.weight") || ends("linear_fc1.bias")) {
    at::Tensor full = AllGatherAlong(shard_grad, 0, *tp, "test");
    if (!config.gated_linear_unit()) return full;
    // Rank shards are [gate_r; up_r]: [tp, 2, ffn/tp, ...] -> [2, tp, ffn/tp, ...] = [gate; up].
    std::vector<int64_t> shape{tp->size(), 2, shard_grad.size(0) / 2};
    for (int64_t d = 1; d < shard_grad.dim(); ++d) shape.push_back(shard_grad.size(d));
    return full.view(shape).transpose(0, 1).reshape(full.sizes());
  }
  if (ends("linear_qkv.weight") || ends("linear_qkv.bias") || ends("word_embeddings.weight") ||
      ends("output_layer.weight")) {
    return AllGatherAlong(shard_grad, 0, *tp, "test");
  }
  return shard_grad;  // replicated
}

}  // namespace megatron::tensor_parallel::testing
