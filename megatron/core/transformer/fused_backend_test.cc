// The fused backend against the local one on a whole GPT: same parameter names (a state dict moves across
// strictly), same logits, loss and every gradient (fp32; the fused norms' CPU path computes in float64).
#include "megatron/core/transformer/fused_backend.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/randint.h>
#include <gtest/gtest.h>

#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/tensor_parallel/random.h"

namespace megatron::transformer {
namespace {

double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

void CompareBackends(Normalization norm, Activation activation,
                     PositionEmbedding positions = PositionEmbedding::kLearnedAbsolute) {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 48;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.kv_channels = 12;
  c.ffn_hidden_size = 96;
  c.vocab_size = 64;
  c.max_position_embeddings = 16;
  c.normalization = norm;
  c.activation = activation;
  c.position_embedding_type = positions;
  c.hidden_dropout = c.attention_dropout = 0;
  tensor_parallel::ManualSeed(3);
  auto local = models::GPTModel::Create(c);
  c.backend = Backend::kFused;
  auto fused = models::GPTModel::Create(c);
  ASSERT_TRUE(local.ok() && fused.ok()) << fused.status();
  ASSERT_TRUE((*fused)->LoadStateDict((*local)->StateDict(), LoadMode::kStrict).ok());

  at::Tensor ids = at::randint(0, 64, {3, 16}, at::kLong), labels = at::randint(0, 64, {3, 16}, at::kLong);
  at::Tensor loss_local = (*local)->Loss(ids, at::Tensor(), labels);
  at::Tensor loss_fused = (*fused)->Loss(ids, at::Tensor(), labels);
  EXPECT_LE(RelativeError(loss_fused, loss_local), 1e-5);
  loss_local.mean().backward();
  loss_fused.mean().backward();
  auto lp = (*local)->NamedParameters(), fp = (*fused)->NamedParameters();
  ASSERT_EQ(lp.size(), fp.size());
  for (size_t i = 0; i < lp.size(); ++i) {
    ASSERT_EQ(lp[i].first, fp[i].first);
    ASSERT_TRUE(fp[i].second.grad().defined()) << fp[i].first;
    EXPECT_LE(RelativeError(fp[i].second.grad(), lp[i].second.grad()), 1e-4) << fp[i].first;
  }
}

TEST(FusedBackend, LayerNormGeluTanhGptMatchesLocal) {
  CompareBackends(Normalization::kLayerNorm, Activation::kGeluTanh);
}
TEST(FusedBackend, LayerNormGeluErfGptMatchesLocal) { CompareBackends(Normalization::kLayerNorm, Activation::kGelu); }
TEST(FusedBackend, RMSNormSwiGLUGptMatchesLocal) { CompareBackends(Normalization::kRMSNorm, Activation::kSwiGLU); }
// Llama-style: RoPE on q and k (fused) with GQA, RMSNorm, SwiGLU.
TEST(FusedBackend, RMSNormSwiGLURopeGptMatchesLocal) {
  CompareBackends(Normalization::kRMSNorm, Activation::kSwiGLU, PositionEmbedding::kRope);
}
TEST(FusedBackend, RMSNormReluFallsBackToLocal) { CompareBackends(Normalization::kRMSNorm, Activation::kRelu); }

}  // namespace
}  // namespace megatron::transformer
