// VocabParallelCrossEntropy on 2 and 4 forked Gloo ranks in fp64: per-token loss and the logits gradient
// assembled from the shards equal at::cross_entropy_loss on the full logits within 1e-10 relative, with and
// without label smoothing, over a padded vocabulary (padded columns unmasked, as Megatron, and masked with -inf
// by the caller), and for out-of-vocab targets (-100).
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

TEST(VocabParallelCrossEntropy, TwoRanks) { distributed::RunMultiProcess(2, CrossEntropy); }
TEST(VocabParallelCrossEntropy, FourRanks) { distributed::RunMultiProcess(4, CrossEntropy); }

}  // namespace
}  // namespace megatron::tensor_parallel
