// CPU tests of the cross-entropy contract: the float64 reference against ATen's own cross_entropy_loss
// (reduction none, ignore_index, label_smoothing) and its autograd gradient, against finite differences in
// float64, on awkward vocabularies with and without padding, every supported dtype; plus the in-place backward,
// zero rows and input checks; the vocabulary-shard pieces (partials, loss from statistics, shard backward) over
// uneven splits with padding-only shards against the whole-vocabulary reference. The CUDA kernels are tested in
// cross_entropy_gpu_test.cc.
#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "megatron/core/fusions/cross_entropy/cross_entropy.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy_test_util.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::RandomGradLoss;
using testing::RandomLogits;
using testing::RandomTargets;
using testing::ToleranceFor;

constexpr int64_t kIgnore = -100;

const std::vector<at::ScalarType>& Dtypes() {
  static const std::vector<at::ScalarType> dtypes = {at::kFloat, at::kBFloat16, at::kHalf};
  return dtypes;
}

struct Case {
  at::ScalarType dtype;
  int64_t n;
  int64_t vocab;
  int64_t valid_vocab;
  double smoothing;
};

std::string Describe(const Case& c) {
  return testing::DtypeName(c.dtype) + " n " + std::to_string(c.n) + " V " + std::to_string(c.vocab) +
         " valid " + std::to_string(c.valid_vocab) + " smoothing " + std::to_string(c.smoothing);
}

// Every dtype x V x valid_vocab x n x smoothing, except that the float64 autograd oracle on 257 x 50K rows (100 MB
// per tensor) runs once (bf16, no smoothing) rather than for every combination: 2-core CI machines.
std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (at::ScalarType dtype : Dtypes()) {
    for (int64_t vocab : testing::AwkwardVocabs()) {
      for (int64_t valid : testing::ValidVocabs(vocab)) {
        for (int64_t n : testing::AwkwardRows()) {
          for (double smoothing : {0.0, 0.1}) {
            const bool huge = n * vocab > 1000000;
            if (huge && !(dtype == at::kBFloat16 && smoothing == 0.0 && valid == vocab)) continue;
            cases.push_back({dtype, n, vocab, valid, smoothing});
          }
        }
      }
    }
  }
  return cases;
}

CrossEntropyParams ParamsOf(const Case& c) {
  CrossEntropyParams p;
  p.ignore_index = kIgnore;
  p.label_smoothing = c.smoothing;
  p.valid_vocab = c.valid_vocab;
  return p;
}

TEST(CrossEntropyReferenceTest, MatchesAtenAndAutograd) {
  uint64_t seed = 1;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(Describe(c));
    const CrossEntropyParams params = ParamsOf(c);
    const at::Tensor logits = RandomLogits(c.n, c.vocab, seed++).to(c.dtype);
    const at::Tensor target = RandomTargets(c.n, c.valid_vocab, kIgnore, seed++);
    const at::Tensor grad_loss = RandomGradLoss(c.n, seed++);

    const CrossEntropyForwardResult got = CrossEntropyForwardReference(logits, target, params);
    ASSERT_EQ(got.loss.scalar_type(), at::kFloat);
    ASSERT_EQ(got.lse.scalar_type(), at::kFloat);

    // ATen in float64 on the same (already rounded) logits, padding columns cut off.
    at::Tensor x64 = logits.to(at::kDouble).set_requires_grad(true);
    const at::Tensor valid64 = x64.narrow(1, 0, c.valid_vocab);
    const at::Tensor want_loss =
        at::cross_entropy_loss(valid64, target, {}, at::Reduction::None, kIgnore, c.smoothing);
    EXPECT_TRUE(AllClose(got.loss, want_loss, ToleranceFor(at::kFloat)));
    EXPECT_TRUE(AllClose(got.lse, at::logsumexp(valid64.detach(), {1}), ToleranceFor(at::kFloat)));

    want_loss.backward(grad_loss.to(at::kDouble));
    const at::Tensor grad =
        CrossEntropyBackwardReference(grad_loss, logits, target, got.lse, params, GradLogitsBuffer::kAllocate);
    ASSERT_EQ(grad.scalar_type(), c.dtype);
    EXPECT_TRUE(AllClose(grad, x64.grad().to(c.dtype), ToleranceFor(c.dtype)));

    // In place: same values, written into (and aliasing) the logits.
    at::Tensor scratch = logits.clone();
    const at::Tensor in_place = CrossEntropyBackwardReference(grad_loss, scratch, target, got.lse, params,
                                                              GradLogitsBuffer::kOverwriteLogits);
    EXPECT_EQ(in_place.data_ptr(), scratch.data_ptr());
    EXPECT_TRUE(at::equal(scratch, grad));
  }
}

// -inf logits inside the valid vocabulary (masking): finite loss and gradient without smoothing, as in ATen.
TEST(CrossEntropyReferenceTest, NegativeInfinityLogitsWithoutSmoothing) {
  const CrossEntropyParams params{kIgnore, 0.0, 0};
  at::Tensor logits = RandomLogits(4, 129, 11);
  logits.narrow(1, 0, 40).fill_(-std::numeric_limits<double>::infinity());
  const at::Tensor target = at::tensor(std::vector<int64_t>{50, kIgnore, 128, 77});
  const at::Tensor grad_loss = RandomGradLoss(4, 12);
  const CrossEntropyForwardResult got = CrossEntropyForwardReference(logits, target, params);
  at::Tensor x64 = logits.to(at::kDouble).set_requires_grad(true);
  const at::Tensor want = at::cross_entropy_loss(x64, target, {}, at::Reduction::None, kIgnore, 0.0);
  EXPECT_TRUE(AllClose(got.loss, want, ToleranceFor(at::kFloat)));
  want.backward(grad_loss.to(at::kDouble));
  EXPECT_TRUE(AllClose(
      CrossEntropyBackwardReference(grad_loss, logits, target, got.lse, params, GradLogitsBuffer::kAllocate),
      x64.grad().to(at::kFloat), ToleranceFor(at::kFloat)));
}

// The dispatcher sends CPU tensors to the reference.
TEST(CrossEntropyDispatchTest, CpuTensorsUseTheReference) {
  const CrossEntropyParams params{kIgnore, 0.1, 120};
  const at::Tensor logits = RandomLogits(5, 128, 7).to(at::kBFloat16);
  const at::Tensor target = RandomTargets(5, 120, kIgnore, 8);
  const at::Tensor grad_loss = RandomGradLoss(5, 9);
  const CrossEntropyForwardResult a = CrossEntropyForward(logits, target, params);
  const CrossEntropyForwardResult b = CrossEntropyForwardReference(logits, target, params);
  EXPECT_TRUE(at::equal(a.loss, b.loss));
  EXPECT_TRUE(at::equal(a.lse, b.lse));
  EXPECT_TRUE(at::equal(
      CrossEntropyBackward(grad_loss, logits, target, a.lse, params, GradLogitsBuffer::kAllocate),
      CrossEntropyBackwardReference(grad_loss, logits, target, b.lse, params, GradLogitsBuffer::kAllocate)));
}

// sum_i grad_loss_i * loss_i(x), differentiated numerically (central differences, float64) at chosen elements,
// including a padding column, an ignored row, the target column and an ordinary one.
TEST(CrossEntropyReferenceTest, BackwardMatchesFiniteDifferences) {
  for (double smoothing : {0.0, 0.1}) {
    SCOPED_TRACE("smoothing " + std::to_string(smoothing));
    const CrossEntropyParams params{kIgnore, smoothing, 5};
    const at::Tensor logits = RandomLogits(3, 7, 42, /*scale=*/1.0).to(at::kDouble);
    const at::Tensor target = at::tensor(std::vector<int64_t>{2, kIgnore, 4});
    const at::Tensor grad_loss = RandomGradLoss(3, 43).to(at::kDouble);
    const CrossEntropyForwardResult fwd = CrossEntropyForwardReference(logits, target, params);
    ASSERT_EQ(fwd.loss.scalar_type(), at::kDouble);
    const at::Tensor grad =
        CrossEntropyBackwardReference(grad_loss, logits, target, fwd.lse, params, GradLogitsBuffer::kAllocate);
    ASSERT_EQ(grad.scalar_type(), at::kDouble);
    auto objective = [&](const at::Tensor& x) {
      return (CrossEntropyForwardReference(x, target, params).loss * grad_loss).sum().item<double>();
    };
    const double h = 1e-6;
    const std::vector<std::pair<int64_t, int64_t>> elements = {{0, 2}, {0, 0}, {0, 6}, {1, 3}, {2, 4}, {2, 1}};
    for (const auto& [i, j] : elements) {
      at::Tensor plus = logits.clone();
      at::Tensor minus = logits.clone();
      plus[i][j] += h;
      minus[i][j] -= h;
      const double numeric = (objective(plus) - objective(minus)) / (2 * h);
      const double analytic = grad[i][j].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-7) << "element (" << i << ", " << j << ")";
    }
    // Padding columns and ignored rows are exactly 0.
    EXPECT_TRUE(at::equal(grad.narrow(1, 5, 2), at::zeros({3, 2}, grad.options())));
    EXPECT_TRUE(at::equal(grad[1], at::zeros({7}, grad.options())));
  }
}

TEST(CrossEntropyReferenceTest, ZeroRows) {
  const CrossEntropyParams params;
  const at::Tensor logits = at::empty({0, 9}, at::TensorOptions().dtype(at::kBFloat16));
  const at::Tensor target = at::empty({0}, at::TensorOptions().dtype(at::kLong));
  const CrossEntropyForwardResult fwd = CrossEntropyForward(logits, target, params);
  EXPECT_EQ(fwd.loss.numel(), 0);
  const at::Tensor grad = CrossEntropyBackward(at::empty({0}, at::TensorOptions().dtype(at::kFloat)), logits, target,
                                               fwd.lse, params, GradLogitsBuffer::kAllocate);
  EXPECT_EQ(grad.sizes(), logits.sizes());
}

// Splits of a full vocabulary [0, V) into contiguous shards: even, uneven, and (with padding) shards holding only
// padding columns.
std::vector<std::vector<int64_t>> ShardSplits(int64_t vocab) {
  std::vector<std::vector<int64_t>> splits = {{vocab}};  // one shard: the whole vocabulary
  if (vocab >= 2) splits.push_back({vocab / 2, vocab - vocab / 2});
  if (vocab >= 4) splits.push_back({1, vocab / 4, vocab - 1 - vocab / 4});
  if (vocab % 4 == 0) splits.push_back({vocab / 4, vocab / 4, vocab / 4, vocab / 4});
  return splits;
}

// The shard pieces, combined as the tensor-parallel all-reduces combine them, give the whole-vocabulary
// reference's loss and lse, and the shards' gradients are its columns: float64, to 1e-12.
TEST(CrossEntropyShardTest, ShardsCombineToTheWholeVocabulary) {
  uint64_t seed = 700;
  const testing::Tolerance tight{1e-12, 1e-12};
  for (int64_t vocab : {12L, 13L, 40L}) {
    for (int64_t valid : {vocab, vocab - 5}) {  // V 12, valid 7, four shards: the last holds only padding
      for (double smoothing : {0.0, 0.1}) {
        for (const std::vector<int64_t>& split : ShardSplits(vocab)) {
          std::string what = "V " + std::to_string(vocab) + " valid " + std::to_string(valid) + " smoothing " +
                             std::to_string(smoothing) + " shards";
          for (int64_t w : split) what += " " + std::to_string(w);
          SCOPED_TRACE(what);
          const int64_t n = 7;
          const CrossEntropyParams params{kIgnore, smoothing, valid};
          const at::Tensor logits = RandomLogits(n, vocab, seed++).to(at::kDouble);
          const at::Tensor target = RandomTargets(n, valid, kIgnore, seed++);
          const at::Tensor grad_loss = RandomGradLoss(n, seed++).to(at::kDouble);
          const CrossEntropyForwardResult whole = CrossEntropyForwardReference(logits, target, params);
          const at::Tensor whole_grad = CrossEntropyBackwardReference(grad_loss, logits, target, whole.lse, params,
                                                                      GradLogitsBuffer::kAllocate);
          std::vector<at::Tensor> partials;
          int64_t start = 0;
          for (int64_t width : split) {
            const VocabShard shard{start, vocab};
            partials.push_back(
                CrossEntropyShardPartials(logits.narrow(1, start, width).contiguous(), target, shard, params));
            start += width;
          }
          const testing::WholeStats stats = testing::CombineShardPartials(partials);
          EXPECT_TRUE(AllClose(stats.lse, whole.lse, tight)) << "lse";
          const at::Tensor loss =
              CrossEntropyLossFromStats(stats.lse, stats.target_logit, stats.sum_logits, target, vocab, params);
          EXPECT_TRUE(AllClose(loss, whole.loss, tight)) << "loss";
          std::vector<at::Tensor> grads;
          start = 0;
          for (int64_t width : split) {
            grads.push_back(CrossEntropyShardBackward(grad_loss, logits.narrow(1, start, width).contiguous(), target,
                                                      stats.lse, VocabShard{start, vocab}, params,
                                                      GradLogitsBuffer::kAllocate));
            start += width;
          }
          EXPECT_TRUE(AllClose(at::cat(grads, 1), whole_grad, tight)) << "grad";
        }
      }
    }
  }
}

TEST(CrossEntropyShardTest, PaddingOnlyShardReportsNegativeInfinity) {
  const at::Tensor logits = RandomLogits(3, 4, 80).to(at::kDouble);
  const at::Tensor target = at::tensor({0L, 2L, kIgnore});
  // Full vocabulary 8 with 4 valid classes: the shard [4, 8) is all padding.
  const CrossEntropyParams params{kIgnore, 0.1, 4};
  const at::Tensor partials = CrossEntropyShardPartials(logits, target, VocabShard{4, 8}, params);
  EXPECT_TRUE(partials[0].eq(-std::numeric_limits<double>::infinity()).all().item<bool>());
  EXPECT_TRUE(partials[1].eq(0).all().item<bool>());
  EXPECT_TRUE(partials[2].eq(0).all().item<bool>());
  const at::Tensor grad = CrossEntropyShardBackward(at::ones({3}, at::kDouble), logits, target,
                                                    at::zeros({3}, at::kDouble), VocabShard{4, 8}, params,
                                                    GradLogitsBuffer::kAllocate);
  EXPECT_TRUE(grad.eq(0).all().item<bool>()) << "padding columns get no gradient";
}

TEST(CrossEntropyShardTest, RejectsShardsOutsideTheVocabulary) {
  const at::Tensor logits = RandomLogits(2, 4, 90);
  const at::Tensor target = at::tensor({0L, 1L});
  const CrossEntropyParams params;
  EXPECT_THROW(CrossEntropyShardPartials(logits, target, VocabShard{6, 8}, params), c10::Error);   // past the end
  EXPECT_THROW(CrossEntropyShardPartials(logits, target, VocabShard{-1, 8}, params), c10::Error);  // negative
  EXPECT_THROW(CrossEntropyShardPartials(logits, target, VocabShard{0, 8}, CrossEntropyParams{-100, 0.0, 9}),
               c10::Error);  // valid_vocab beyond the full vocabulary
  EXPECT_THROW(CrossEntropyShardPartials(logits, at::tensor({0L, 8L}), VocabShard{0, 8}, params),
               c10::Error);  // target outside the full vocabulary
}

TEST(CrossEntropyInputTest, RejectsBadInputs) {
  const at::Tensor logits = RandomLogits(4, 10, 3);
  const at::Tensor target = RandomTargets(4, 10, kIgnore, 4);
  const CrossEntropyParams ok;
  EXPECT_NO_THROW(CrossEntropyForward(logits, target, ok));
  EXPECT_THROW(CrossEntropyForward(logits.unsqueeze(0), target, ok), c10::Error);              // 3-D logits
  EXPECT_THROW(CrossEntropyForward(logits.t(), RandomTargets(10, 4, kIgnore, 5), ok), c10::Error);  // strided
  EXPECT_THROW(CrossEntropyForward(logits.to(at::kInt), target, ok), c10::Error);              // dtype
  EXPECT_THROW(CrossEntropyForward(logits, target.to(at::kInt), ok), c10::Error);              // int32 target
  EXPECT_THROW(CrossEntropyForward(logits, target.narrow(0, 0, 3), ok), c10::Error);           // [n-1] target
  EXPECT_THROW(CrossEntropyForward(logits, target, {kIgnore, 0.0, 11}), c10::Error);           // valid_vocab > V
  EXPECT_THROW(CrossEntropyForward(logits, target, {kIgnore, 0.0, -1}), c10::Error);
  EXPECT_THROW(CrossEntropyForward(logits, target, {kIgnore, 1.5, 0}), c10::Error);            // smoothing
  at::Tensor bad_target = target.clone();
  bad_target[0] = 10;  // == V
  EXPECT_THROW(CrossEntropyForward(logits, bad_target, ok), c10::Error);
  bad_target[0] = 8;  // < V but a padding column
  EXPECT_THROW(CrossEntropyForward(logits, bad_target, {kIgnore, 0.0, 8}), c10::Error);
  const CrossEntropyForwardResult fwd = CrossEntropyForward(logits, target, ok);
  const at::Tensor g = at::ones({4}, at::TensorOptions().dtype(at::kFloat));
  EXPECT_NO_THROW(CrossEntropyBackward(g, logits, target, fwd.lse, ok, GradLogitsBuffer::kAllocate));
  EXPECT_THROW(CrossEntropyBackward(g.to(at::kDouble), logits, target, fwd.lse, ok, GradLogitsBuffer::kAllocate),
               c10::Error);
  EXPECT_THROW(CrossEntropyBackward(g, logits, target, fwd.lse.narrow(0, 0, 3), ok, GradLogitsBuffer::kAllocate),
               c10::Error);
  EXPECT_THROW(CrossEntropyBackward(g, logits, target, at::Tensor(), ok, GradLogitsBuffer::kAllocate), c10::Error);
}

}  // namespace
}  // namespace megatron::fusions
