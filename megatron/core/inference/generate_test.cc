#include "megatron/core/inference/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include "megatron/core/tensor_parallel/random.h"
#include <ATen/TensorOperators.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

namespace megatron::inference {
namespace {

using transformer::TransformerConfig;

std::unique_ptr<models::GPTModel> TinyModel(transformer::PositionEmbedding pos, int groups) {
  tensor_parallel::ManualSeed(7);
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_query_groups = groups;
  c.kv_channels = 8;
  c.ffn_hidden_size = 64;
  c.vocab_size = 50;
  c.max_position_embeddings = 64;
  c.position_embedding_type = pos;
  c.init_method_std = 0.3;  // large weights so logits are peaked and argmax is not a near-tie
  auto model = models::GPTModel::Create(c);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

TEST(Generate, GreedyIsIdenticalWithAndWithoutKVCache) {
  for (auto pos : {transformer::PositionEmbedding::kLearnedAbsolute, transformer::PositionEmbedding::kRope}) {
    auto model = TinyModel(pos, pos == transformer::PositionEmbedding::kRope ? 2 : 4);
    SamplingParams p;
    p.decoding = Decoding::kGreedy;
    p.max_new_tokens = 20;
    auto gen = at::detail::createCPUGenerator(1);
    p.cache = Cache::kKVCache;
    auto with_cache = Generate(*model, {3, 14, 15, 9}, p, gen);
    p.cache = Cache::kRecompute;
    auto without = Generate(*model, {3, 14, 15, 9}, p, gen);
    EXPECT_EQ(with_cache.size(), 20u);
    EXPECT_EQ(with_cache, without);
  }
}

TEST(Generate, KVCacheLogitsMatchFullForward) {
  auto model = TinyModel(transformer::PositionEmbedding::kRope, 2);
  model->SetTraining(false);
  at::Tensor ids = at::randint(0, 50, {1, 10}, at::kLong);
  at::Tensor full = model->Logits(ids, at::Tensor());
  transformer::KVCache cache(2);
  at::Tensor first = model->Logits(ids.slice(1, 0, 6), at::Tensor(), &cache);
  at::Tensor rest = model->Logits(ids.slice(1, 6, 10), at::Tensor(), &cache);
  EXPECT_TRUE(first.allclose(full.slice(1, 0, 6), 1e-5, 1e-5));
  EXPECT_TRUE(rest.allclose(full.slice(1, 6, 10), 1e-5, 1e-5)) << (rest - full.slice(1, 6, 10)).abs().max();
}

TEST(SampleToken, TopKAndTopPRestrictTheSupport) {
  at::Tensor logits = at::tensor({0.0f, 5.0f, 4.0f, -1.0f, 4.5f});
  auto gen = at::detail::createCPUGenerator(3);
  SamplingParams p;
  p.top_k = 2;
  for (int i = 0; i < 200; ++i) {
    int64_t t = SampleToken(logits, p, gen);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
  p.top_k = 0;
  // softmax of (5, 4.5, 4, 0, -1): p(1) ~ 0.49, p(4) ~ 0.30; top_p 0.6 keeps exactly {1, 4}.
  p.top_p = 0.6;
  for (int i = 0; i < 200; ++i) {
    int64_t t = SampleToken(logits, p, gen);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
  p.valid_vocab_size = 3;  // the best of ids 0..2 under greedy is 1
  p.decoding = Decoding::kGreedy;
  EXPECT_EQ(SampleToken(logits, p, gen), 1);
  p.valid_vocab_size = 1;
  EXPECT_EQ(SampleToken(logits, p, gen), 0);
}

}  // namespace
}  // namespace megatron::inference
