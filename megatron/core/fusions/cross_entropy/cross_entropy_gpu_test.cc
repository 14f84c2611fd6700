// GPU tests of the CUDA cross-entropy kernels (cross_entropy_kernel.cu through cross_entropy_cuda.cc): every
// element of loss, lse and the gradient against the float64 reference (cross_entropy_reference.cc) on the same
// inputs, for every dtype, awkward vocabularies with and without padding, label smoothing, ignored rows,
// misaligned (scalar-path) inputs, in place and out of place; plus -inf logits, out-of-range targets (NaN by
// contract), zero rows and float64 rejection; and the vocabulary-shard pieces (the tensor-parallel cross entropy's
// kernel passes on one GPU): each shard's partials and gradient against the reference, and the shards combined as
// the all-reduces combine them against the whole-vocabulary reference. Skipped when the machine has no CUDA
// device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/isnan.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "megatron/core/fusions/cross_entropy/cross_entropy.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy_test_util.h"
#include "megatron/core/fusions/testing/cuda_device.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::RandomGradLoss;
using testing::RandomLogits;
using testing::RandomTargets;
using testing::StatsTolerance;
using testing::Tolerance;
using testing::ToleranceFor;

constexpr int64_t kIgnore = -100;


const at::Device kCuda(at::kCUDA, 0);

// The gradient in float32: the kernel's p = exp(x - lse) carries lse's float32 error (StatsTolerance), i.e. an
// absolute error of up to |grad_loss| * p * 1e-5 with |grad_loss| up to ~4 here; bf16/fp16 are dominated by
// their own rounding (ToleranceFor).
Tolerance GradTolerance(at::ScalarType dtype) {
  return dtype == at::kFloat ? Tolerance{1e-4, 1e-4} : ToleranceFor(dtype);
}

struct Case {
  at::ScalarType dtype;
  int64_t n;
  int64_t vocab;
  int64_t valid_vocab;
  double smoothing;
  bool misaligned;  // logits start one element past a 16-byte boundary: the scalar (1-element pack) path
};

std::string Describe(const Case& c) {
  return testing::DtypeName(c.dtype) + " n " + std::to_string(c.n) + " V " + std::to_string(c.vocab) + " valid " +
         std::to_string(c.valid_vocab) + " smoothing " + std::to_string(c.smoothing) +
         (c.misaligned ? " misaligned" : "");
}

// A contiguous CUDA copy of `cpu`, optionally starting one element into its allocation.
at::Tensor ToCuda(const at::Tensor& cpu, bool misaligned) {
  if (!misaligned) return cpu.to(kCuda);
  at::Tensor storage = at::empty({cpu.numel() + 1}, cpu.options().device(kCuda));
  at::Tensor view = storage.narrow(0, 1, cpu.numel()).view(cpu.sizes());
  view.copy_(cpu);
  return view;
}

void RunCase(const Case& c, const at::Tensor& logits, const at::Tensor& target, const at::Tensor& grad_loss) {
  SCOPED_TRACE(Describe(c));
  const CrossEntropyParams params{kIgnore, c.smoothing, c.valid_vocab};
  const CrossEntropyForwardResult want = CrossEntropyForwardReference(logits, target, params);
  const at::Tensor want_grad =
      CrossEntropyBackwardReference(grad_loss, logits, target, want.lse, params, GradLogitsBuffer::kAllocate);

  const at::Tensor x = ToCuda(logits, c.misaligned);
  const at::Tensor t = target.to(kCuda);
  const at::Tensor g = grad_loss.to(kCuda);
  const CrossEntropyForwardResult got = CrossEntropyForward(x, t, params);
  ASSERT_EQ(got.loss.scalar_type(), at::kFloat);
  ASSERT_EQ(got.lse.scalar_type(), at::kFloat);
  EXPECT_TRUE(AllClose(got.loss, want.loss, StatsTolerance())) << "loss";
  EXPECT_TRUE(AllClose(got.lse, want.lse, StatsTolerance())) << "lse";

  const at::Tensor grad = CrossEntropyBackward(g, x, t, got.lse, params, GradLogitsBuffer::kAllocate);
  ASSERT_EQ(grad.scalar_type(), c.dtype);
  EXPECT_TRUE(AllClose(grad, want_grad, GradTolerance(c.dtype))) << "grad (out of place)";
  EXPECT_TRUE(at::equal(x.to(at::kCPU), logits)) << "out-of-place backward modified the logits";

  const at::Tensor grad_in_place = CrossEntropyBackward(g, x, t, got.lse, params, GradLogitsBuffer::kOverwriteLogits);
  EXPECT_EQ(grad_in_place.data_ptr(), x.data_ptr());
  EXPECT_TRUE(at::equal(grad_in_place.to(at::kCPU), grad.to(at::kCPU))) << "in place differs from out of place";
}

// Shards of the full vocabulary as tensor parallelism makes them (equal widths; the last ones may hold only
// padding), one GPU: partials and shard gradients against the reference shard by shard, and combined (max / sum,
// as the all-reduces) against the whole-vocabulary reference.
void RunShardCase(at::ScalarType dtype, int64_t n, int64_t vocab, int64_t valid, int tp, double smoothing,
                  uint64_t seed) {
  SCOPED_TRACE(testing::DtypeName(dtype) + " n " + std::to_string(n) + " V " + std::to_string(vocab) + " valid " +
               std::to_string(valid) + " tp " + std::to_string(tp) + " smoothing " + std::to_string(smoothing));
  ASSERT_EQ(vocab % tp, 0);
  const int64_t width = vocab / tp;
  const CrossEntropyParams params{kIgnore, smoothing, valid};
  const at::Tensor logits = RandomLogits(n, vocab, seed).to(dtype);
  const at::Tensor target = RandomTargets(n, valid, kIgnore, seed + 1);
  const at::Tensor grad_loss = RandomGradLoss(n, seed + 2);
  const CrossEntropyForwardResult want = CrossEntropyForwardReference(logits, target, params);
  const at::Tensor want_grad =
      CrossEntropyBackwardReference(grad_loss, logits, target, want.lse, params, GradLogitsBuffer::kAllocate);

  const at::Tensor t = target.to(kCuda);
  std::vector<at::Tensor> partials;
  std::vector<at::Tensor> shards;
  for (int r = 0; r < tp; ++r) {
    SCOPED_TRACE("shard " + std::to_string(r));
    const VocabShard shard{r * width, vocab};
    const at::Tensor cpu_shard = logits.narrow(1, r * width, width).contiguous();
    shards.push_back(cpu_shard.to(kCuda));
    partials.push_back(CrossEntropyShardPartials(shards.back(), t, shard, params));
    const at::Tensor want_partials = CrossEntropyShardPartialsReference(cpu_shard, target, shard, params);
    ASSERT_EQ(partials.back().sizes(), at::IntArrayRef({3, n}));
    // A padding-only shard's lse is -inf on both sides (AllClose rejects infinities: compare them apart).
    if (std::isinf(want_partials[0][0].item<double>())) {
      EXPECT_TRUE(partials.back()[0].isinf().all().item<bool>()) << "padding-only shard lse";
    } else {
      EXPECT_TRUE(AllClose(partials.back()[0], want_partials[0], StatsTolerance())) << "shard lse";
    }
    EXPECT_TRUE(AllClose(partials.back()[1], want_partials[1], ToleranceFor(at::kFloat))) << "target logit";
    // float32 sum of up to ~25K logits of size ~3: rounding ~1e-7 relative to sum |x|.
    EXPECT_TRUE(AllClose(partials.back()[2], want_partials[2], Tolerance{1e-5, 1e-3})) << "sum of logits";
  }
  const testing::WholeStats stats = testing::CombineShardPartials(partials);
  const at::Tensor loss =
      CrossEntropyLossFromStats(stats.lse, stats.target_logit, stats.sum_logits, t, vocab, params);
  EXPECT_TRUE(AllClose(stats.lse, want.lse, StatsTolerance())) << "combined lse";
  EXPECT_TRUE(AllClose(loss, want.loss, StatsTolerance())) << "loss";

  std::vector<at::Tensor> grads;
  const at::Tensor g = grad_loss.to(kCuda);
  for (int r = 0; r < tp; ++r) {
    grads.push_back(CrossEntropyShardBackward(g, shards[r], t, stats.lse, VocabShard{r * width, vocab}, params,
                                              GradLogitsBuffer::kAllocate));
  }
  EXPECT_TRUE(AllClose(at::cat(grads, 1), want_grad, GradTolerance(dtype))) << "gradient";
}

TEST(CrossEntropyCudaTest, VocabShardsMatchReference) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  uint64_t seed = 9000;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int tp : {2, 4}) {
      for (double smoothing : {0.0, 0.1}) {
        RunShardCase(dtype, 67, 50304, 50257, tp, smoothing, seed);  // GPT-2's padded vocabulary
        RunShardCase(dtype, 33, 1000, 1000, tp, smoothing, seed + 3);
        // 12 columns, 7 valid: with 4 shards the last holds only padding; width 3 or 6 is the scalar path.
        RunShardCase(dtype, 9, 12, 7, tp, smoothing, seed + 6);
        seed += 9;
      }
    }
  }
}

TEST(CrossEntropyCudaTest, MatchesReferenceEveryElement) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  uint64_t seed = 1000;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t vocab : testing::AwkwardVocabs()) {
      for (int64_t valid : testing::ValidVocabs(vocab)) {
        for (int64_t n : testing::AwkwardRows()) {
          for (double smoothing : {0.0, 0.1}) {
            for (bool misaligned : {false, true}) {
              // 257 x 50K rows: once per dtype and padding, with smoothing, aligned (the float64 reference of
              // 13M elements is the cost); the smaller shapes cover every other combination.
              if (n * vocab > 1000000 && (smoothing == 0.0 || misaligned)) continue;
              const Case c{dtype, n, vocab, valid, smoothing, misaligned};
              const at::Tensor logits = RandomLogits(n, vocab, seed).to(dtype);
              RunCase(c, logits, RandomTargets(n, valid, kIgnore, seed + 1), RandomGradLoss(n, seed + 2));
              seed += 3;
            }
          }
        }
      }
    }
  }
}

// Logits of -inf inside the valid vocabulary (attention-style masking), including each row's first columns, so
// threads start from an all -inf state: they must contribute 0, not NaN.
TEST(CrossEntropyCudaTest, NegativeInfinityLogits) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::Tensor logits = RandomLogits(4, 1000, 5).to(dtype);
    logits.narrow(1, 0, 300).fill_(-std::numeric_limits<double>::infinity());
    const at::Tensor target = at::empty({4}, at::TensorOptions().dtype(at::kLong)).fill_(500);
    RunCase({dtype, 4, 1000, 1000, 0.0, false}, logits, target, RandomGradLoss(4, 6));
  }
}

TEST(CrossEntropyCudaTest, OutOfRangeTargetGivesNaN) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const CrossEntropyParams params{kIgnore, 0.0, 120};
  const at::Tensor logits = RandomLogits(3, 128, 9).to(at::kBFloat16).to(kCuda);
  at::Tensor target = RandomTargets(3, 120, kIgnore, 10);
  target[0] = 125;  // a padding column
  target[2] = -1;
  const CrossEntropyForwardResult got = CrossEntropyForward(logits, target.to(kCuda), params);
  const at::Tensor nan = at::isnan(got.loss).to(at::kCPU);
  EXPECT_TRUE(nan[0].item<bool>());
  EXPECT_FALSE(nan[1].item<bool>());  // ignored row: 0
  EXPECT_TRUE(nan[2].item<bool>());
}

TEST(CrossEntropyCudaTest, ZeroRowsAndFloat64) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const CrossEntropyParams params;
  const at::Tensor logits = at::empty({0, 50304}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda));
  const at::Tensor target = at::empty({0}, at::TensorOptions().dtype(at::kLong).device(kCuda));
  const CrossEntropyForwardResult fwd = CrossEntropyForward(logits, target, params);
  EXPECT_EQ(fwd.loss.numel(), 0);
  const at::Tensor g = at::empty({0}, at::TensorOptions().dtype(at::kFloat).device(kCuda));
  EXPECT_EQ(CrossEntropyBackward(g, logits, target, fwd.lse, params, GradLogitsBuffer::kAllocate).sizes(),
            logits.sizes());
  EXPECT_THROW(CrossEntropyForward(RandomLogits(2, 8, 1).to(at::kDouble).to(kCuda),
                                   RandomTargets(2, 8, kIgnore, 2).to(kCuda), params),
               c10::Error);
}

}  // namespace
}  // namespace megatron::fusions
