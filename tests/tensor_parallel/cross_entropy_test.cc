// VocabParallelCrossEntropy on 2 and 4 forked Gloo ranks in fp64: per-token loss and the logits gradient
// assembled from the shards equal at::cross_entropy_loss on the full logits within 1e-10 relative, with and
// without label smoothing, over a padded vocabulary (padded columns unmasked, as Megatron, and masked with -inf
// by the caller), and for out-of-vocab targets (-100). FusedVocabParallelCrossEntropy (the FUSED backend's: the
// fused kernels' shard pieces, their float64 reference on CPU) the same way against the single-process fused
// reference cross entropy of the full logits, to 1e-10: label smoothing over the full vocabulary, ignore_index
// rows, and a vocabulary that does not divide by TP (padded; the padded columns excluded via valid_vocab, one
// rank holding only padding at TP=4).
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/zeros.h>

#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/tensor_parallel/cross_entropy.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::tensor_parallel {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using testing::ExpectClose;
using testing::RandnOnAllRanks;

constexpr int64_t kSeq = 6, kBatch = 3;

enum class PaddedColumns { kUnmasked, kMaskedByCaller };

// at::cross_entropy_loss per token over `logits` [s, b, V].
at::Tensor Reference(const at::Tensor& logits, const at::Tensor& target, double smoothing) {
  const int64_t v = logits.size(-1);
  return at::cross_entropy_loss(logits.reshape({-1, v}), target.reshape({-1}), /*weight=*/{},
                                /*reduction=*/0 /* none */, /*ignore_index=*/-100, smoothing)
      .view(target.sizes());
}

void Check(Group& g, int64_t vocab, double label_smoothing, PaddedColumns padded_columns) {
  const int64_t padded = parallel_state::PaddedVocabSize(vocab, 1, g.size());
  const std::string what = "vocab " + std::to_string(vocab) + "/" + std::to_string(padded) + " smoothing " +
                           std::to_string(label_smoothing) +
                           (padded_columns == PaddedColumns::kMaskedByCaller ? " masked: " : ": ");
  at::Tensor full = RandnOnAllRanks({kSeq, kBatch, padded}, 21).mul(3.0);
  if (padded_columns == PaddedColumns::kMaskedByCaller) {
    const at::Tensor is_padding = at::arange(padded, at::TensorOptions().dtype(at::kLong)) >= vocab;
    full = full.masked_fill(is_padding, -std::numeric_limits<double>::infinity());
  }
  ManualSeed(22);
  const at::Tensor target = at::randint(vocab, {kSeq, kBatch}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor grad_loss = RandnOnAllRanks({kSeq, kBatch}, 23);

  // Megatron's smoothing α spreads over V-1 ids; at::cross_entropy_loss's over V: α·V/(V-1) converts.
  const int64_t ref_vocab = padded_columns == PaddedColumns::kMaskedByCaller ? vocab : padded;
  const double ref_smoothing = label_smoothing * padded / (padded - 1.0);
  const at::Tensor full_ref = full.narrow(-1, 0, ref_vocab).clone().requires_grad_();
  const at::Tensor loss_ref = Reference(full_ref, target, ref_smoothing);
  (loss_ref * grad_loss).sum().backward();

  const int64_t chunk = padded / g.size();
  const at::Tensor shard = full.narrow(-1, g.rank() * chunk, chunk).clone().requires_grad_();
  const at::Tensor loss = VocabParallelCrossEntropy(shard, target, &g, label_smoothing);
  ExpectClose(loss, loss_ref.detach(), what + "loss");
  (loss * grad_loss).sum().backward();
  const at::Tensor grad = AllGatherAlong(shard.grad(), -1, g, "test");
  ExpectClose(grad.narrow(-1, 0, ref_vocab), full_ref.grad(), what + "logits grad");
  if (ref_vocab < padded) {
    EXPECT_TRUE(grad.narrow(-1, ref_vocab, padded - ref_vocab).eq(0).all().item<bool>())
        << what << "masked padded columns get no gradient";
  }
}

void CrossEntropy(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  Check(g, 12, 0.0, PaddedColumns::kUnmasked);
  Check(g, 12, 0.1, PaddedColumns::kUnmasked);
  Check(g, 11, 0.0, PaddedColumns::kUnmasked);  // Megatron: padded columns take part
  Check(g, 11, 0.2, PaddedColumns::kUnmasked);
  Check(g, 9, 0.0, PaddedColumns::kMaskedByCaller);  // -inf padded logits: the unpadded cross entropy

  // TP = 1 (null group) is the plain cross entropy.
  const at::Tensor logits = RandnOnAllRanks({kSeq, kBatch, 10}, 31);
  ManualSeed(32);
  const at::Tensor target = at::randint(10, {kSeq, kBatch}, at::TensorOptions().dtype(at::kLong));
  ExpectClose(VocabParallelCrossEntropy(logits, target, nullptr), Reference(logits, target, 0.0), "TP=1 loss");

  // An out-of-vocab target (-100) is in no slice: as in Megatron its loss is log Σexp(logit − max), i.e.
  // logsumexp − max (the predicted logit counts as 0 after the shift), and its gradient the plain softmax.
  const int64_t chunk = 12 / g.size();
  const at::Tensor full = RandnOnAllRanks({2, 12}, 41);
  const at::Tensor shard = full.narrow(-1, g.rank() * chunk, chunk).clone().requires_grad_();
  const at::Tensor ignored = at::full({2}, -100, at::TensorOptions().dtype(at::kLong));
  const at::Tensor loss = VocabParallelCrossEntropy(shard, ignored, &g);
  ExpectClose(loss, at::logsumexp(full, {-1}) - std::get<0>(full.max(-1)), "-100 target loss");
  loss.sum().backward();
  ExpectClose(AllGatherAlong(shard.grad(), -1, g, "test"), full.softmax(-1), "-100 target grad");
}

// The fused vocab-parallel loss against the single-process fused reference (fusions/cross_entropy) on the full
// [s, b, padded] logits with valid_vocab = vocab: loss and the gradient assembled from the shards.
void FusedCheck(Group& g, int64_t vocab, double label_smoothing) {
  const int64_t padded = parallel_state::PaddedVocabSize(vocab, 1, g.size());
  const std::string what = "fused, vocab " + std::to_string(vocab) + "/" + std::to_string(padded) + " smoothing " +
                           std::to_string(label_smoothing) + ": ";
  const fusions::CrossEntropyParams params{/*ignore_index=*/-100, label_smoothing, /*valid_vocab=*/vocab};
  const at::Tensor full = RandnOnAllRanks({kSeq, kBatch, padded}, 51).mul(3.0);
  ManualSeed(52);
  at::Tensor target = at::randint(vocab, {kSeq, kBatch}, at::TensorOptions().dtype(at::kLong));
  target.select(1, 1).narrow(0, 0, 3).fill_(params.ignore_index);  // some ignored tokens
  target[kSeq - 1][0] = vocab - 1;                                  // the last valid id, next to the padding
  const at::Tensor grad_loss = RandnOnAllRanks({kSeq, kBatch}, 53);

  const at::Tensor flat = full.reshape({-1, padded});
  const at::Tensor flat_target = target.reshape({-1});
  const fusions::CrossEntropyForwardResult ref = fusions::CrossEntropyForwardReference(flat, flat_target, params);
  const at::Tensor ref_grad = fusions::CrossEntropyBackwardReference(
      grad_loss.reshape({-1}), flat, flat_target, ref.lse, params, fusions::GradLogitsBuffer::kAllocate);

  // TP = 1 (no group) first: the same function on the whole vocabulary.
  const at::Tensor whole = full.clone().requires_grad_();
  const at::Tensor whole_loss = FusedVocabParallelCrossEntropy(whole, target, nullptr, params);
  ExpectClose(whole_loss, ref.loss.view({kSeq, kBatch}), what + "TP=1 loss");
  (whole_loss * grad_loss).sum().backward();
  ExpectClose(whole.grad(), ref_grad.view(full.sizes()), what + "TP=1 logits grad");

  const int64_t chunk = padded / g.size();
  const at::Tensor shard = full.narrow(-1, g.rank() * chunk, chunk).clone().requires_grad_();
  const at::Tensor loss = FusedVocabParallelCrossEntropy(shard, target, &g, params);
  ASSERT_EQ(loss.scalar_type(), at::kDouble);
  ExpectClose(loss, ref.loss.view({kSeq, kBatch}), what + "loss");
  EXPECT_TRUE(loss.select(1, 1).narrow(0, 0, 3).eq(0).all().item<bool>()) << what << "ignored tokens: loss 0";
  (loss * grad_loss).sum().backward();
  const at::Tensor grad = AllGatherAlong(shard.grad(), -1, g, "test");
  ExpectClose(grad, ref_grad.view(full.sizes()), what + "logits grad");
  EXPECT_TRUE(grad.narrow(-1, vocab, padded - vocab).eq(0).all().item<bool>()) << what << "padding: no gradient";
}

void FusedCrossEntropy(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  for (double smoothing : {0.0, 0.1}) {
    FusedCheck(g, 12, smoothing);  // divides by 2 and 4: no padding
    FusedCheck(g, 11, smoothing);  // padded to 12: the last rank's slice ends in padding
    FusedCheck(g, 9, smoothing);   // padded to 10 (TP=2) or 12 (TP=4: rank 3 holds only padding)
  }
}

TEST(FusedVocabParallelCrossEntropy, TwoRanks) { distributed::RunMultiProcess(2, FusedCrossEntropy); }
TEST(FusedVocabParallelCrossEntropy, FourRanks) { distributed::RunMultiProcess(4, FusedCrossEntropy); }

TEST(VocabParallelCrossEntropy, TwoRanks) { distributed::RunMultiProcess(2, CrossEntropy); }
TEST(VocabParallelCrossEntropy, FourRanks) { distributed::RunMultiProcess(4, CrossEntropy); }

}  // namespace
}  // namespace megatron::tensor_parallel
