// The GPT model pipeline-parallel on 2 and 4 forked Gloo ranks, in fp64, against the single-process model built
// from the same seed: for three training steps (4 micro-batches each, loss averaged as Megatron does: the
// masked mean of each micro-batch divided by the number of micro-batches, summed by back-propagation), the
// loss of every step and every parameter's gradient (TP shards assembled, the tied output copy compared with
// the word embeddings' gradient) equal the single-process run within 1e-10 relative; the step is plain SGD on
// both sides, so later steps also check that the tied copies stay equal. Layouts: PP=2 1F1B (even and uneven
// layer splits), PP=2 x VP=2 interleaved, TP=2 x PP=2 (with sequence parallelism on the Llama-like variant).
// Variants: LayerNorm + GeLU + learned positions + tied embeddings; RMSNorm + SwiGLU + RoPE + GQA, untied.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/randint.h>

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/parallel_state/parallel_layout.h"
#include "megatron/core/pipeline_parallel/gpt_chunks.h"
#include "megatron/core/pipeline_parallel/p2p_communication.h"
#include "megatron/core/pipeline_parallel/schedules.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::pipeline_parallel {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using models::GPTModel;
using parallel_state::LayerAssignment;
using tensor_parallel::testing::ExpectClose;
using tensor_parallel::testing::FullGrad;
using tensor_parallel::testing::ToDouble;
using transformer::ModelParallel;
using transformer::TransformerConfig;

constexpr uint64_t kWeightSeed = 4321;
constexpr int kTokenizerVocab = 37;
constexpr int64_t kMicroBatch = 2, kSeq = 8;
constexpr int kMicroBatches = 4, kSteps = 3;
constexpr double kLr = 0.5;  // large, so that a drifting tied copy would show in later steps

enum class Variant { kGpt2Like, kLlamaLike };

TransformerConfig MakeConfig(Variant variant, int tp) {
  TransformerConfig c;
  c.num_layers = 4;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.num_query_groups = variant == Variant::kLlamaLike ? 2 : 4;
  c.kv_channels = 4;
  c.ffn_hidden_size = 24;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  c.max_position_embeddings = 16;
  c.vocab_size = parallel_state::PaddedVocabSize(kTokenizerVocab, 1, tp);
  if (variant == Variant::kLlamaLike) {
    c.normalization = transformer::Normalization::kRMSNorm;
    c.activation = transformer::Activation::kSwiGLU;
    c.position_embedding_type = transformer::PositionEmbedding::kRope;
    c.share_embeddings_and_output_weights = false;
    c.add_bias_linear = false;
    c.add_qkv_bias = false;
  }
  return c;
}

struct MicroBatch {
  at::Tensor tokens, positions, labels, loss_mask;
};

// The same data on every rank: step s, micro-batch m.
MicroBatch MakeMicroBatch(int step, int m) {
  tensor_parallel::ManualSeed(1000 + step * 10 + m);
  MicroBatch b;
  b.tokens = at::randint(kTokenizerVocab, {kMicroBatch, kSeq}, at::kLong);
  b.labels = at::randint(kTokenizerVocab, {kMicroBatch, kSeq}, at::kLong);
  b.loss_mask = (at::randint(4, {kMicroBatch, kSeq}, at::kLong) > 0).to(at::kDouble);  // about 1 in 4 masked
  b.positions = at::arange(kSeq, at::kLong).unsqueeze(0).expand({kMicroBatch, kSeq});
  return b;
}

at::Tensor MaskedMean(const at::Tensor& per_token, const at::Tensor& mask) {
  return (per_token * mask).sum() / mask.sum().clamp_min(1.0);
}

// The single-process per-token loss in the precision the parallel model computes it: vocab-parallel cross entropy
// (TP > 1) works in the logits' dtype (fp64 here), the TP=1 model's Loss in fp32 (gpt_model.h).
at::Tensor RefPerTokenLoss(const GPTModel& ref, const MicroBatch& b, int tp) {
  if (tp == 1) return ref.Loss(b.tokens, b.positions, b.labels);
  const at::Tensor logits = ref.Logits(b.tokens, b.positions);  // [b, s, V] fp64
  const int64_t v = logits.size(2);
  return at::cross_entropy_loss(logits.reshape({kMicroBatch * kSeq, v}), b.labels.reshape({kMicroBatch * kSeq}), {},
                                at::Reduction::None)
      .view({kMicroBatch, kSeq});
}

void SgdStep(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  for (at::Tensor p : params) {
    if (p.grad().defined()) {
      p.sub_(p.grad() * kLr);
      p.mutable_grad() = at::Tensor();
    }
  }
}


struct Layout {
  int tp = 1, pp = 2, vp = 1;
  std::vector<int> stage_counts;  // empty: even split
  bool sequence_parallel = false;
};

void CompareWithSingleProcess(DistributedContext& ctx, const Layout& lay, Variant variant) {
  const std::string what = std::string(variant == Variant::kLlamaLike ? "llama-like" : "gpt2-like") +
                           " TP=" + std::to_string(lay.tp) + " PP=" + std::to_string(lay.pp) +
                           " VP=" + std::to_string(lay.vp) + (lay.stage_counts.empty() ? "" : " uneven") +
                           (lay.sequence_parallel ? " SP" : "") + ": ";
  parallel_state::ParallelConfig pc;
  pc.world_size = ctx.world_size();
  pc.tp = lay.tp;
  pc.pp = lay.pp;
  pc.vp = lay.vp;
  auto layout = parallel_state::ParallelLayout::Create(pc);
  ASSERT_TRUE(layout.ok()) << layout.status();
  // Collective: every rank creates every group in the same order.
  std::shared_ptr<Group> tp, pp, embedding;
  for (const auto& ranks : layout->TensorParallelGroups()) {
    auto g = ctx.NewGroup(ranks, "tp");
    ASSERT_TRUE(g.ok()) << g.status();
    if (*g) tp = *g;
  }
  for (const auto& ranks : layout->PipelineParallelGroups()) {
    auto g = ctx.NewGroup(ranks, "pp");
    ASSERT_TRUE(g.ok()) << g.status();
    if (*g) pp = *g;
  }
  for (const auto& ranks : layout->EmbeddingGroups()) {
    auto g = ctx.NewGroup(ranks, "embd");
    ASSERT_TRUE(g.ok()) << g.status();
    if (*g) embedding = *g;
  }
  const int pp_rank = layout->Coordinates(ctx.rank()).pp;

  const TransformerConfig config = MakeConfig(variant, lay.tp);
  tensor_parallel::ManualSeed(kWeightSeed);
  auto ref = GPTModel::Create(config);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ToDouble(**ref);

  auto assignment = lay.stage_counts.empty()
                        ? LayerAssignment::Even(config.num_layers, lay.pp, lay.vp)
                        : LayerAssignment::FromStageCounts(config.num_layers, lay.pp, lay.vp, lay.stage_counts);
  ASSERT_TRUE(assignment.ok()) << assignment.status();
  const ModelParallel parallel = lay.tp > 1 ? ModelParallel{tp.get(), lay.sequence_parallel} : ModelParallel{};
  tensor_parallel::ManualSeed(kWeightSeed);
  auto chunks = BuildGptChunks(config, parallel, *assignment, pp_rank);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), static_cast<size_t>(lay.vp));
  for (auto& chunk : *chunks) ToDouble(*chunk);
  ASSERT_TRUE(SyncTiedEmbeddings(*chunks, embedding.get()).ok());

  std::map<std::string, at::Tensor> ref_params;
  for (const auto& [name, p] : (*ref)->NamedParameters()) ref_params[name] = p;
  const bool last_stage = pp_rank == lay.pp - 1;

  for (int step = 0; step < kSteps; ++step) {
    const std::string at_step = what + "step " + std::to_string(step) + ": ";
    std::vector<MicroBatch> batches;
    for (int m = 0; m < kMicroBatches; ++m) batches.push_back(MakeMicroBatch(step, m));

    double ref_loss = 0;
    for (const MicroBatch& b : batches) {
      at::Tensor loss = MaskedMean(RefPerTokenLoss(**ref, b, lay.tp), b.loss_mask);
      (loss / static_cast<double>(kMicroBatches)).backward();
      ref_loss += loss.item<double>() / kMicroBatches;
    }

    double loss_sum = 0;
    int losses = 0;
    auto forward_step = [&](int chunk, int m, const at::Tensor& input) -> at::Tensor {
      const MicroBatch& b = batches[m];
      const GPTModel& model = *(*chunks)[chunk];
      at::Tensor out = model.StageForward(model.stage().pre_process ? b.tokens : input, b.positions, b.labels);
      if (!model.stage().post_process) return out;
      at::Tensor loss = MaskedMean(out, b.loss_mask);
      loss_sum += loss.item<double>();
      ++losses;
      return loss / static_cast<double>(kMicroBatches);
    };
    absl::Status s = ForwardBackward(forward_step, pp.get(), {lay.vp, kMicroBatches, false});
    ASSERT_TRUE(s.ok()) << at_step << s;
    if (last_stage) {
      ASSERT_EQ(losses, kMicroBatches) << at_step;
      EXPECT_NEAR(loss_sum / kMicroBatches, ref_loss, 1e-10 * std::abs(ref_loss)) << at_step << "loss";
    } else {
      EXPECT_EQ(losses, 0) << at_step;
    }
    ASSERT_TRUE(AllReduceTiedEmbeddingGrads(*chunks, embedding.get()).ok());

    std::vector<at::Tensor> params;
    for (auto& chunk : *chunks) {
      if (lay.sequence_parallel) {
        for (auto& [name, p] : chunk->SequenceParallelParameters()) {
          at::Tensor g = p.mutable_grad();
          tensor_parallel::AllReduceInPlace(g, *tp, distributed::ReduceOp::kSum, "test");
        }
      }
      for (const auto& [name, p] : chunk->NamedParameters()) {
        params.push_back(p);
        // The last stage's tied copy is the word embeddings under another name.
        const bool tied_copy = name == "output_layer.weight" && config.share_embeddings_and_output_weights;
        auto it = ref_params.find(tied_copy ? "embedding.word_embeddings.weight" : name);
        ASSERT_NE(it, ref_params.end()) << at_step << "unexpected parameter " << name;
        ASSERT_TRUE(p.grad().defined()) << at_step << name << " has no gradient";
        ExpectClose(FullGrad(name, p.grad(), config, tp.get()), it->second.grad(), at_step + name + " grad");
      }
    }
    SgdStep(params);
    SgdStep((*ref)->Parameters());
  }

  // Every layer is on exactly one pipeline rank (the union over ranks is checked by the layer ranges).
  for (int v = 0; v < lay.vp; ++v) {
    const auto& st = (*chunks)[v]->stage();
    EXPECT_EQ(st.layer_begin, assignment->Chunk(pp_rank, v).begin) << what;
    EXPECT_EQ(st.layer_end, assignment->Chunk(pp_rank, v).end) << what;
  }
}

void RunLayouts(DistributedContext& ctx, const std::vector<Layout>& layouts) {
  at::set_num_threads(1);
  for (const Layout& lay : layouts) {
    for (Variant variant : {Variant::kGpt2Like, Variant::kLlamaLike}) CompareWithSingleProcess(ctx, lay, variant);
  }
}

TEST(GptPipeline, OneFOneBTwoStages) {
  distributed::RunMultiProcess(2, [](DistributedContext& ctx) {
    RunLayouts(ctx, {Layout{1, 2, 1, {}, false}, Layout{1, 2, 1, {1, 3}, false}});
  });
}

TEST(GptPipeline, InterleavedTwoStagesTwoChunks) {
  distributed::RunMultiProcess(2, [](DistributedContext& ctx) { RunLayouts(ctx, {Layout{1, 2, 2, {}, false}}); });
}

TEST(GptPipeline, TensorTimesPipeline) {
  distributed::RunMultiProcess(4, [](DistributedContext& ctx) {
    RunLayouts(ctx, {Layout{2, 2, 1, {}, false}, Layout{2, 2, 1, {}, true}});
  });
}

// A stage that never sends (a hung or diverged peer, Megatron's "PP hangs" reports) ends the receiving stage's
// schedule with an error naming the rank, group, direction and tag within the collective timeout, not a hang;
// and shape/dtype travel with every message.
TEST(PipelineP2P, ShapesTravelAndASilentPeerTimesOut) {
  distributed::MultiProcessOptions options;
  options.collective_timeout = absl::Seconds(1);
  distributed::RunMultiProcess(
      2,
      [](DistributedContext& ctx) {
        PipelineP2P p2p(&ctx.world());
        if (ctx.rank() == 0) {
          const at::Tensor sent = at::arange(30, at::kDouble).view({2, 3, 5});
          ASSERT_TRUE(p2p.Send(sent, p2p.next(), /*tag=*/7).ok());
          ASSERT_TRUE(p2p.WaitSends().ok());
          absl::StatusOr<at::Tensor> never = p2p.Recv(p2p.prev(), /*tag=*/8);
          ASSERT_FALSE(never.ok());
          EXPECT_EQ(never.status().code(), absl::StatusCode::kDeadlineExceeded) << never.status();
          EXPECT_TRUE(absl::StrContains(never.status().message(), "pipeline recv header")) << never.status();
          EXPECT_TRUE(absl::StrContains(never.status().message(), "tag 8")) << never.status();
          EXPECT_TRUE(absl::StrContains(never.status().message(), "rank 0")) << never.status();
        } else {
          absl::StatusOr<at::Tensor> got = p2p.Recv(p2p.prev(), /*tag=*/7);
          ASSERT_TRUE(got.ok()) << got.status();
          EXPECT_EQ(got->sizes(), (std::vector<int64_t>{2, 3, 5}));
          EXPECT_EQ(got->scalar_type(), at::kDouble);
          EXPECT_TRUE(got->equal(at::arange(30, at::kDouble).view({2, 3, 5})));
          absl::SleepFor(absl::Milliseconds(1500));  // alive but silent until rank 0's deadline has passed
        }
      },
      options);
}

}  // namespace
}  // namespace megatron::pipeline_parallel
