// Data parallelism on 2 and 4 forked Gloo ranks, in fp64, against the single-process run: a tiny GPT trained for
// three AdamW steps with clipping active, each rank on its slice of the global batch (2 micro-batches each):
//   - DataParallelGrads (buckets all-reduced from backward hooks) + the ordinary AdamW;
//   - DataParallelGrads + DistributedAdamW (state sharded, parameters all-gathered);
// give the single-process losses and, after every step, the single-process parameters within 1e-10 relative.
// Also checked: every bucket's all-reduce started during backward (overlap), and the per-rank bytes of the
// distributed optimizer against Megatron's formula (fp32: 8 + 8/DP bytes per parameter, against 16 unsharded).
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/randint.h>

#include <functional>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "megatron/core/distributed/data_parallel.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/optimizer/distributed_optimizer.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/tensor_parallel/random.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::distributed {
namespace {

using models::GPTModel;
using tensor_parallel::testing::ExpectClose;
using tensor_parallel::testing::ToDouble;
using transformer::TransformerConfig;

constexpr int kVocab = 37;
constexpr int64_t kMicroBatch = 2, kSeq = 8;
constexpr int kMicroPerRank = 2, kSteps = 3;
constexpr double kLr = 0.05, kClip = 0.5;
constexpr int64_t kBucketSize = 600;  // elements: several buckets for this model

TransformerConfig MakeConfig() {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.kv_channels = 4;
  c.ffn_hidden_size = 24;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  c.vocab_size = kVocab;
  c.normalization = transformer::Normalization::kRMSNorm;
  c.activation = transformer::Activation::kSwiGLU;
  c.position_embedding_type = transformer::PositionEmbedding::kRope;
  return c;
}

std::unique_ptr<GPTModel> Build(at::ScalarType dtype) {
  tensor_parallel::ManualSeed(4321);
  auto model = GPTModel::Create(MakeConfig());
  EXPECT_TRUE(model.ok()) << model.status();
  if (dtype == at::kDouble) ToDouble(**model);
  return std::move(*model);
}

// Global micro-batch g of step s (the same on every rank).
at::Tensor MicroBatchLoss(const GPTModel& model, int step, int g) {
  tensor_parallel::ManualSeed(1000 + step * 100 + g);
  const at::Tensor tokens = at::randint(kVocab, {kMicroBatch, kSeq}, at::kLong);
  const at::Tensor labels = at::randint(kVocab, {kMicroBatch, kSeq}, at::kLong);
  const at::Tensor mask = (at::randint(4, {kMicroBatch, kSeq}, at::kLong) > 0).to(at::kDouble);
  return (model.Loss(tokens, {}, labels) * mask).sum() / mask.sum();
}

// kDistributedFused: the sharded update through the multi-tensor AdamW (fusions/adam; its float64 reference on
// CPU) instead of per-segment ATen ops.
enum class Optim { kAdamW, kDistributed, kDistributedFused };

void CompareWithSingleProcess(DistributedContext& ctx, Optim optim) {
  at::set_num_threads(1);
  const int dp = ctx.world_size(), rank = ctx.rank();
  const std::string what = std::string(optim == Optim::kAdamW        ? "DDP + AdamW"
                                       : optim == Optim::kDistributed ? "DDP + DistributedAdamW"
                                                                      : "DDP + DistributedAdamW (fused)") +
                           " DP=" + std::to_string(dp) + ": ";
  const optimizer::AdamWConfig adam_config{0.9, 0.95, 1e-8, 0.1};
  std::unique_ptr<GPTModel> ref = Build(at::kDouble);
  std::unique_ptr<GPTModel> model = Build(at::kDouble);
  optimizer::AdamW ref_adam(ref->NamedParameters(), adam_config);

  auto grads = DataParallelGrads::Create(model->NamedParameters(), &ctx.world(), {kBucketSize});
  ASSERT_TRUE(grads.ok()) << grads.status();
  ASSERT_GT((*grads)->num_buckets(), 2) << what;
  std::unique_ptr<optimizer::AdamW> adam;
  std::unique_ptr<optimizer::DistributedAdamW> dist;
  if (optim == Optim::kAdamW) {
    adam = std::make_unique<optimizer::AdamW>(model->NamedParameters(), adam_config);
  } else {
    optimizer::AdamWConfig config = adam_config;
    config.fused = optim == Optim::kDistributedFused;
    dist = std::make_unique<optimizer::DistributedAdamW>(**grads, config);
  }

  for (int step = 0; step < kSteps; ++step) {
    const std::string at_step = what + "step " + std::to_string(step) + ": ";
    // Reference: all dp x kMicroPerRank micro-batches, loss averaged over them.
    const int total = dp * kMicroPerRank;
    double ref_loss = 0;
    for (int g = 0; g < total; ++g) {
      at::Tensor loss = MicroBatchLoss(*ref, step, g);
      (loss / static_cast<double>(total)).backward();
      ref_loss += loss.item<double>() / total;
    }
    const double ref_norm = optimizer::ClipGradNorm(ref->Parameters(), kClip);
    ref_adam.Step(kLr);
    ref_adam.ZeroGrad();

    // This rank: its kMicroPerRank micro-batches; DataParallelGrads averages over DP.
    (*grads)->StartIteration(kMicroPerRank);
    double loss_sum = 0;
    for (int m = 0; m < kMicroPerRank; ++m) {
      at::Tensor loss = MicroBatchLoss(*model, step, rank * kMicroPerRank + m);
      (loss / static_cast<double>(kMicroPerRank)).backward();
      loss_sum += loss.item<double>();
    }
    ASSERT_TRUE((*grads)->FinishIteration().ok()) << at_step;
    EXPECT_EQ((*grads)->buckets_started_in_backward(), (*grads)->num_buckets())
        << at_step << "every bucket's all-reduce should start while backward runs";
    at::Tensor l = at::full({1}, loss_sum / kMicroPerRank, at::TensorOptions().dtype(at::kDouble));
    ASSERT_TRUE(ctx.world().AllReduce(l, ReduceOp::kAvg).ok());
    EXPECT_NEAR(l.item<double>(), ref_loss, 1e-10 * ref_loss) << at_step << "loss";

    double norm = 0;
    if (adam) {
      norm = optimizer::ClipGradNorm(model->Parameters(), kClip);
      adam->Step(kLr);
      adam->ZeroGrad();
    } else {
      auto n = dist->ClipGradNorm(kClip, [](const std::string&) { return true; }, nullptr);
      ASSERT_TRUE(n.ok()) << n.status();
      norm = *n;
      ASSERT_TRUE(dist->Step(kLr).ok()) << at_step;
      dist->ZeroGrad();
    }
    EXPECT_GT(ref_norm, kClip) << at_step << "clipping should be active";
    EXPECT_NEAR(norm, ref_norm, 1e-10 * ref_norm) << at_step << "gradient norm";
    std::map<std::string, at::Tensor> ref_params;
    for (const auto& [name, p] : ref->NamedParameters()) ref_params[name] = p;
    for (const auto& [name, p] : model->NamedParameters()) {
      ExpectClose(p.detach(), ref_params.at(name).detach(), at_step + name);
    }
  }
}

// Megatron's bytes per parameter with fp32 parameters: 16 unsharded; 8 + 8/d with the distributed optimizer.
void OptimizerBytes(DistributedContext& ctx) {
  at::set_num_threads(1);
  const int dp = ctx.world_size();
  std::unique_ptr<GPTModel> model = Build(at::kFloat);
  const int64_t n = model->NumParameters();
  auto grads = DataParallelGrads::Create(model->NamedParameters(), &ctx.world(), {kBucketSize});
  ASSERT_TRUE(grads.ok()) << grads.status();
  optimizer::DistributedAdamW dist(**grads, {});
  const int64_t padded = (*grads)->buffer().numel();
  ASSERT_EQ(padded % dp, 0);
  ASSERT_LT(padded - n, dp);  // padding only to a multiple of DP
  EXPECT_EQ(dist.StateBytes(), 8 * padded / dp) << "exp_avg + exp_avg_sq, fp32, this rank's range only";
  // Gathered over ranks, the shards cover each parameter element exactly once.
  at::Tensor state = at::full({1}, static_cast<double>(dist.StateBytes()), at::TensorOptions().dtype(at::kDouble));
  ASSERT_TRUE(ctx.world().AllReduce(state).ok());
  EXPECT_EQ(state.item<double>(), 8.0 * padded);
  const double per_param = (4.0 * n + 4.0 * padded + dist.StateBytes()) / n;  // param + grad buffer + state
  EXPECT_NEAR(per_param, 8.0 + 8.0 / dp, 16.0 * dp / n) << "Megatron: 8 + 8/d bytes per parameter (fp32)";
  optimizer::AdamW unsharded(model->NamedParameters(), {});
  int64_t unsharded_state = 0;
  for (const auto& [name, t] : unsharded.StateDict()) {
    if (name != "step") unsharded_state += t.nbytes();
  }
  EXPECT_EQ((4 * n + 4 * n + unsharded_state) / n, 16) << "Megatron: 16 bytes per parameter unsharded (fp32)";
}

TEST(DataParallel, BucketedAllReduceWithAdamWEqualsSingleProcess) {
  RunMultiProcess(2, [](DistributedContext& ctx) { CompareWithSingleProcess(ctx, Optim::kAdamW); });
}

TEST(DataParallel, DistributedOptimizerEqualsSingleProcess) {
  RunMultiProcess(2, [](DistributedContext& ctx) { CompareWithSingleProcess(ctx, Optim::kDistributed); });
  RunMultiProcess(4, [](DistributedContext& ctx) { CompareWithSingleProcess(ctx, Optim::kDistributed); });
  RunMultiProcess(2, [](DistributedContext& ctx) { CompareWithSingleProcess(ctx, Optim::kDistributedFused); });
}

TEST(DataParallel, DistributedOptimizerBytesFollowMegatronsFormula) {
  RunMultiProcess(2, OptimizerBytes);
  RunMultiProcess(4, OptimizerBytes);
}

}  // namespace
}  // namespace megatron::distributed
