// The GPT model under tensor parallelism on 2 and 4 forked Gloo ranks, in fp64: the per-token loss, the
// gathered logits and every gradient (assembled from the shards into full tensors, matched to the
// single-process model by parameter name) equal the TP=1 model built from the same seed within 1e-10
// relative. Covered: LayerNorm + GeLU + learned positions + tied output layer, and RMSNorm + SwiGLU + RoPE +
// GQA + untied output layer; each with and without sequence parallelism; the vocabulary is padded so it
// divides by TP (37 tokens -> 38 / 40 rows). Both variants also with the FUSED backend (its CPU path: the fused
// ops' float64 references, including the residual add + norm and the fused vocab-parallel cross entropy) against
// the FUSED single-process model.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/randint.h>

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::tensor_parallel {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using models::GPTModel;
using testing::ExpectClose;
using testing::FullGrad;
using testing::RandnOnAllRanks;
using testing::ToDouble;
using transformer::ModelParallel;
using transformer::TransformerConfig;

constexpr uint64_t kWeightSeed = 4321;
constexpr int kTokenizerVocab = 37;  // divisible by neither 2 nor 4
constexpr int64_t kBatch = 2, kSeq = 8;

enum class Variant { kGpt2Like, kLlamaLike };

TransformerConfig MakeConfig(Variant variant, int tp, transformer::Backend backend = transformer::Backend::kLocal) {
  TransformerConfig c;
  c.backend = backend;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 8;
  c.num_query_groups = variant == Variant::kLlamaLike ? 4 : 8;
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

std::unique_ptr<GPTModel> Build(const TransformerConfig& config, const ModelParallel& parallel) {
  ManualSeed(kWeightSeed);
  auto model = GPTModel::Create(config, parallel);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  ToDouble(**model);
  return std::move(*model);
}


void CompareWithSingleProcess(Group& g, Variant variant, bool sequence_parallel,
                              transformer::Backend backend = transformer::Backend::kLocal) {
  const std::string what = std::string(variant == Variant::kLlamaLike ? "llama-like" : "gpt2-like") +
                           (sequence_parallel ? " SP" : "") +
                           (backend == transformer::Backend::kFused ? " FUSED" : "") + " TP=" +
                           std::to_string(g.size()) + ": ";
  const TransformerConfig config = MakeConfig(variant, g.size(), backend);
  std::unique_ptr<GPTModel> ref = Build(config, {});
  std::unique_ptr<GPTModel> tp = Build(config, {&g, sequence_parallel});
  ASSERT_TRUE(ref != nullptr && tp != nullptr) << what;

  ManualSeed(99);
  const at::Tensor ids = at::randint(kTokenizerVocab, {kBatch, kSeq}, at::kLong);
  const at::Tensor labels = at::randint(kTokenizerVocab, {kBatch, kSeq}, at::kLong);
  const at::Tensor grad_loss = RandnOnAllRanks({kBatch, kSeq}, 7);

  // Reference: the single-process model's logits, cross entropy in fp64.
  const at::Tensor ref_logits = ref->Logits(ids, {});
  const at::Tensor ref_loss = at::cross_entropy_loss(ref_logits.reshape({kBatch * kSeq, config.vocab_size}),
                                                     labels.reshape({kBatch * kSeq}), {}, at::Reduction::None)
                                  .view({kBatch, kSeq});
  (ref_loss * grad_loss).sum().backward();

  const at::Tensor loss = tp->Loss(ids, {}, labels);
  ExpectClose(loss, ref_loss.detach(), what + "loss");
  (loss * grad_loss).sum().backward();
  ExpectClose(tp->Logits(ids, {}).detach(), ref_logits.detach(), what + "gathered logits");

  // Sequence parallelism: complete the gradients of the parameters that saw only this rank's tokens.
  const auto sp_params = tp->SequenceParallelParameters();
  EXPECT_EQ(sp_params.empty(), !sequence_parallel) << what;
  for (const auto& [name, p] : sp_params) {
    at::Tensor grad = p.mutable_grad();
    AllReduceInPlace(grad, g, distributed::ReduceOp::kSum, "test");
  }

  std::map<std::string, at::Tensor> ref_params;
  for (const auto& [name, p] : ref->NamedParameters()) ref_params[name] = p;
  const auto tp_params = tp->NamedParameters();
  ASSERT_EQ(tp_params.size(), ref_params.size()) << what << "parameter count";
  for (const auto& [name, p] : tp_params) {
    auto it = ref_params.find(name);
    ASSERT_NE(it, ref_params.end()) << what << "unexpected parameter " << name;
    ASSERT_TRUE(p.grad().defined()) << what << name << " has no gradient";
    ExpectClose(FullGrad(name, p.grad(), config, &g), it->second.grad(), what + name + " grad");
  }
}

void GptTensorParallel(DistributedContext& ctx) {
  at::set_num_threads(1);
  for (Variant variant : {Variant::kGpt2Like, Variant::kLlamaLike}) {
    for (bool sp : {false, true}) CompareWithSingleProcess(ctx.world(), variant, sp);
  }
  CompareWithSingleProcess(ctx.world(), Variant::kGpt2Like, /*sequence_parallel=*/true, transformer::Backend::kFused);
  CompareWithSingleProcess(ctx.world(), Variant::kLlamaLike, /*sequence_parallel=*/false,
                           transformer::Backend::kFused);
}

void DivisibilityErrors(DistributedContext& ctx) {
  TransformerConfig config = MakeConfig(Variant::kLlamaLike, 1);  // vocab 37
  auto model = GPTModel::Create(config, {&ctx.world()});
  ASSERT_FALSE(model.ok());
  EXPECT_TRUE(absl::StrContains(model.status().message(), "model.vocab_size")) << model.status();
  config = MakeConfig(Variant::kLlamaLike, ctx.world().size());
  config.num_query_groups = 2;  // 8 heads in 2 groups: not divisible by 4
  model = GPTModel::Create(config, {&ctx.world()});
  ASSERT_FALSE(model.ok());
  EXPECT_TRUE(absl::StrContains(model.status().message(), "model.num_query_groups")) << model.status();
}

TEST(GptTensorParallel, TwoRanks) { distributed::RunMultiProcess(2, GptTensorParallel); }
TEST(GptTensorParallel, FourRanks) { distributed::RunMultiProcess(4, GptTensorParallel); }
TEST(GptTensorParallel, DivisibilityErrorsNameTheField) { distributed::RunMultiProcess(4, DivisibilityErrors); }

}  // namespace
}  // namespace megatron::tensor_parallel
