// The GPT model context-parallel (CP=2, and TP=2 x CP=2) on forked Gloo ranks, in fp64, against the
// single-process model built from the same seed: each CP rank holds its zigzag tokens (chunks r and 2CP-1-r of
// the sequence); its logits equal the single-process logits at those positions, and every parameter's gradient
// (summed over CP, TP shards assembled) equals the single-process gradient, within 1e-10 relative. Covers the
// K/V all-gather and its reduce-scatter backward, the causal mask by global position, RoPE and learned positions
// indexed per rank. Variants: LayerNorm + GeLU + learned positions + tied; RMSNorm + SwiGLU + RoPE + GQA, untied.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/tensor.h>

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/parallel_state/context_parallel.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/parallel_state/parallel_layout.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::transformer {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using models::GPTModel;
using tensor_parallel::testing::ExpectClose;
using tensor_parallel::testing::FullGrad;
using tensor_parallel::testing::RandnOnAllRanks;
using tensor_parallel::testing::ToDouble;

constexpr int kTokenizerVocab = 37;
constexpr int64_t kBatch = 2, kSeq = 8;

enum class Variant { kGpt2Like, kLlamaLike };

TransformerConfig MakeConfig(Variant variant, int tp) {
  TransformerConfig c;
  c.num_layers = 2;
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
    c.normalization = Normalization::kRMSNorm;
    c.activation = Activation::kSwiGLU;
    c.position_embedding_type = PositionEmbedding::kRope;
    c.share_embeddings_and_output_weights = false;
    c.add_bias_linear = false;
    c.add_qkv_bias = false;
  }
  return c;
}

std::unique_ptr<GPTModel> Build(const TransformerConfig& config, const ModelParallel& parallel) {
  tensor_parallel::ManualSeed(4321);
  auto model = GPTModel::Create(config, parallel);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  ToDouble(**model);
  return std::move(*model);
}


void CompareWithSingleProcess(DistributedContext& ctx, int tp_size, Variant variant) {
  at::set_num_threads(1);
  const std::string what = std::string(variant == Variant::kLlamaLike ? "llama-like" : "gpt2-like") + " TP=" +
                           std::to_string(tp_size) + " CP=2: ";
  parallel_state::ParallelConfig pc;
  pc.world_size = ctx.world_size();
  pc.tp = tp_size;
  pc.cp = 2;
  auto layout = parallel_state::ParallelLayout::Create(pc);
  ASSERT_TRUE(layout.ok()) << layout.status();
  std::shared_ptr<Group> tp, cp;
  for (const auto& ranks : layout->TensorParallelGroups()) {
    auto g = ctx.NewGroup(ranks, "tp");
    ASSERT_TRUE(g.ok());
    if (*g) tp = *g;
  }
  for (const auto& ranks : layout->ContextParallelGroups()) {
    auto g = ctx.NewGroup(ranks, "cp");
    ASSERT_TRUE(g.ok());
    if (*g) cp = *g;
  }
  const TransformerConfig config = MakeConfig(variant, tp_size);
  std::unique_ptr<GPTModel> ref = Build(config, {});
  ModelParallel parallel;
  if (tp_size > 1) parallel.tp = tp.get();
  parallel.cp = cp.get();
  std::unique_ptr<GPTModel> model = Build(config, parallel);
  ASSERT_TRUE(ref && model);

  tensor_parallel::ManualSeed(99);
  const at::Tensor ids = at::randint(kTokenizerVocab, {kBatch, kSeq}, at::kLong);
  const at::Tensor grad_logits = RandnOnAllRanks({kBatch, kSeq, config.vocab_size}, 7);
  const at::Tensor ref_logits = ref->Logits(ids, {});
  (ref_logits * grad_logits).sum().backward();

  const std::vector<int64_t> pos = parallel_state::ZigzagPositions(kSeq, 2, cp->rank());
  const at::Tensor index = at::tensor(pos, at::TensorOptions().dtype(at::kLong));
  const at::Tensor logits = model->Logits(ids.index_select(1, index), {});
  ExpectClose(logits.detach(), ref_logits.detach().index_select(1, index), what + "logits of this rank's tokens");
  (logits * grad_logits.index_select(1, index)).sum().backward();

  std::map<std::string, at::Tensor> ref_params;
  for (const auto& [name, p] : ref->NamedParameters()) ref_params[name] = p;
  for (const auto& [name, p] : model->NamedParameters()) {
    ASSERT_TRUE(p.grad().defined()) << what << name;
    at::Tensor g = p.grad().clone();
    tensor_parallel::AllReduceInPlace(g, *cp, distributed::ReduceOp::kSum, "test");  // CP ranks saw other tokens
    ExpectClose(FullGrad(name, g, config, tp.get()), ref_params.at(name).grad(), what + name + " grad");
  }
}

TEST(GptContextParallel, TwoRanks) {
  distributed::RunMultiProcess(2, [](DistributedContext& ctx) {
    for (Variant v : {Variant::kGpt2Like, Variant::kLlamaLike}) CompareWithSingleProcess(ctx, 1, v);
  });
}

TEST(GptContextParallel, TensorTimesContextFourRanks) {
  distributed::RunMultiProcess(4, [](DistributedContext& ctx) { CompareWithSingleProcess(ctx, 2, Variant::kLlamaLike); });
}

TEST(ContextParallelCausalMask, MasksLaterGlobalPositions) {
  // s = 8, CP = 2: rank 1 holds positions [2 3 4 5]; the gathered keys are [0 1 6 7 | 2 3 4 5].
  const at::Tensor m = ContextParallelCausalMask(4, 2, 1, at::kCPU).view({4, 8});
  const std::vector<std::vector<int>> expected = {{0, 0, 1, 1, 0, 1, 1, 1},
                                                  {0, 0, 1, 1, 0, 0, 1, 1},
                                                  {0, 0, 1, 1, 0, 0, 0, 1},
                                                  {0, 0, 1, 1, 0, 0, 0, 0}};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 8; ++j) EXPECT_EQ(m[i][j].item<bool>(), expected[i][j] == 1) << i << "," << j;
  }
}

}  // namespace
}  // namespace megatron::transformer
