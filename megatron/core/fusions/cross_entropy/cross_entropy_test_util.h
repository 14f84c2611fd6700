// Shared by cross_entropy_test.cc and cross_entropy_gpu_test.cc: tolerances by dtype, inputs (logits, targets
// with ignored rows), and an every-element comparison.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/log.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/sum.h>
#include <gtest/gtest.h>

#include "megatron/core/fusions/testing/all_close.h"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace megatron::fusions::testing {

// Tolerance, ToleranceFor, AllClose, AwkwardRows and DtypeName come from fusions/testing/all_close.h. For the
// gradient (stored in the logits' dtype) the dtype tolerances hold because its large entries are O(1) (p - 1 at
// the target) and the small ones cancel against eps / K.


// loss and lse are float32 sums over up to 50K exponentials: float32 rounding of the running sums (relative
// ~log2(V) * 2^-24) plus the ~2 ulp of the kernel's exp, on values of size lse ~ log(V) + max |x| ~ 20. 1e-5
// relative + 1e-4 absolute covers that with a margin and is still far below a dropped or extra column
// (e.g. treating 47 padding columns of 50304 as valid shifts lse by ~1e-3).
inline Tolerance StatsTolerance() { return {1e-5, 1e-4}; }


// Vocabulary sizes: 1, a prime, 16-byte pack alignment +/- 1 around 128, not a power of two, GPT-2's 50257 (odd:
// the scalar path) and its Megatron-padded 50304 (a multiple of 128).
inline std::vector<int64_t> AwkwardVocabs() { return {1, 7, 128, 129, 1000, 50257, 50304}; }

// The valid-vocabulary sizes to test for V: all of it, and (V > 1) a padded vocabulary: 50257 inside 50304 as in
// Megatron's GPT-2, otherwise a few columns short, including a K that is not a multiple of the 16-byte pack.
inline std::vector<int64_t> ValidVocabs(int64_t vocab) {
  if (vocab == 1) return {1};
  if (vocab == 50304) return {50304, 50257};
  return {vocab, vocab - (vocab > 8 ? 5 : 1)};
}

// Deterministic float32 normal logits, scaled so single columns matter for the softmax.
inline at::Tensor RandomLogits(int64_t n, int64_t vocab, uint64_t seed, double scale = 3.0) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn({n, vocab}, gen, at::TensorOptions().dtype(at::kFloat)) * scale;
}

// Targets in [0, classes), with every third row (starting at row 1) set to ignore_index.
inline at::Tensor RandomTargets(int64_t n, int64_t classes, int64_t ignore_index, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor t = at::randint(classes, {n}, gen, at::TensorOptions().dtype(at::kLong));
  int64_t* tp = t.data_ptr<int64_t>();
  for (int64_t i = 1; i < n; i += 3) tp[i] = ignore_index;
  return t;
}

// A float32 per-row upstream gradient (as a mean-reduced loss with a loss mask would give, but varied per row).
inline at::Tensor RandomGradLoss(int64_t n, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn({n}, gen, at::TensorOptions().dtype(at::kFloat));
}

// The statistics of the whole vocabulary from every shard's CrossEntropyShardPartials ([3, n] each), combined as
// the tensor-parallel all-reduces do (tensor_parallel::FusedVocabParallelCrossEntropy): M = max of the shards'
// lse, lse = M + log sum exp(lse_r - M); target logit and sum of logits summed.
struct WholeStats {
  at::Tensor lse, target_logit, sum_logits;  // [n] each
};
inline WholeStats CombineShardPartials(const std::vector<at::Tensor>& partials) {
  const at::Tensor all = at::stack(partials);  // [shards, 3, n]
  const at::Tensor shard_lse = all.select(1, 0);
  const at::Tensor m = at::amax(shard_lse, {0});
  WholeStats out;
  out.lse = m + at::log(at::exp(shard_lse - m).sum({0}));
  out.target_logit = all.select(1, 1).sum({0});
  out.sum_logits = all.select(1, 2).sum({0});
  return out;
}

}  // namespace megatron::fusions::testing
