// Unit tests of the legacy tree's own pieces: Megatron's checkpoint key upgrades, FusedScaleMaskSoftmax's
// constructor rule and both paths (the kernel path through its autograd function, on CPU via the float64
// reference kernel, against autograd of the fallback), and the legacy parameter names of research notes §5.7.
// Model-level numerics are checked against the core models in tests/legacy_vs_core.
#include <cmath>
#include <map>
#include <set>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "legacy/model/bert_model.h"
#include "legacy/model/biencoder_model.h"
#include "legacy/model/fused_softmax.h"
#include "legacy/model/gpt_model.h"
#include "legacy/model/module.h"
#include "legacy/model/realm_model.h"

namespace megatron::legacy {
namespace {

TEST(UpgradeLegacyKey, RenamesOlderNames) {
  EXPECT_EQ(UpgradeLegacyKey("language_model.transformer.layers.3.attention.query_key_value.weight"),
            "language_model.encoder.layers.3.self_attention.query_key_value.weight");
  EXPECT_EQ(UpgradeLegacyKey("language_model.encoder.layers.0.input_layernorm.bias"),
            "language_model.encoder.layers.0.input_norm.bias");
  EXPECT_EQ(UpgradeLegacyKey("language_model.encoder.layers.0.post_attention_layernorm.weight"),
            "language_model.encoder.layers.0.post_attention_norm.weight");
  EXPECT_EQ(UpgradeLegacyKey("language_model.encoder.final_layernorm.weight"),
            "language_model.encoder.final_norm.weight");
  EXPECT_EQ(UpgradeLegacyKey("lm_head.layernorm.weight"), "lm_head.norm.weight");
  const std::string current = "language_model.encoder.layers.1.self_attention.dense.weight";
  EXPECT_EQ(UpgradeLegacyKey(current), current);
}

transformer::TransformerConfig SmallConfig() {
  transformer::TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.num_query_groups = 4;
  c.kv_channels = 4;
  c.ffn_hidden_size = 32;
  c.vocab_size = 50;
  c.max_position_embeddings = 12;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  return c;
}

TEST(LegacyModels, ParameterNamesAreTheLegacyCheckpointKeys) {
  auto gpt = GPTModel::Create(SmallConfig());
  ASSERT_TRUE(gpt.ok()) << gpt.status();
  std::set<std::string> names;
  for (const auto& [name, t] : (*gpt)->NamedParameters()) names.insert(name);
  for (const char* key : {"language_model.embedding.word_embeddings.weight",
                          "language_model.embedding.position_embeddings.weight",
                          "language_model.encoder.layers.0.input_norm.weight",
                          "language_model.encoder.layers.1.self_attention.query_key_value.weight",
                          "language_model.encoder.layers.1.self_attention.dense.bias",
                          "language_model.encoder.layers.0.post_attention_norm.bias",
                          "language_model.encoder.layers.0.mlp.dense_h_to_4h.weight",
                          "language_model.encoder.layers.0.mlp.dense_4h_to_h.weight",
                          "language_model.encoder.final_norm.weight"}) {
    EXPECT_TRUE(names.count(key)) << key;
  }
  EXPECT_EQ(names.size(), 2u + 2 * 12 + 2);
  EXPECT_EQ((*gpt)->StateDictForSaveCheckpoint().size(), names.size());

  auto bert = BertModel::Create(SmallConfig());
  ASSERT_TRUE(bert.ok()) << bert.status();
  std::set<std::string> bert_names;
  for (const auto& [name, t] : (*bert)->NamedParameters()) bert_names.insert(name);
  for (const char* key : {"language_model.embedding.tokentype_embeddings.weight", "language_model.pooler.dense.weight",
                          "lm_head.dense.weight", "lm_head.norm.weight", "lm_head.bias", "binary_head.weight"}) {
    EXPECT_TRUE(bert_names.count(key)) << key;
  }
}

TEST(LegacyModels, LoadLegacyStateDictAcceptsOldNames) {
  at::manual_seed(1);
  auto a = GPTModel::Create(SmallConfig());
  auto b = GPTModel::Create(SmallConfig());
  ASSERT_TRUE(a.ok() && b.ok());
  std::map<std::string, at::Tensor> old;
  for (auto& [name, t] : (*a)->StateDict()) {
    std::string k = name;
    for (auto [from, to] : {std::pair<std::string, std::string>{".input_norm.", ".input_layernorm."},
                            {".self_attention.", ".attention."},
                            {"language_model.encoder.", "language_model.transformer."}}) {
      if (auto p = k.find(from); p != std::string::npos) k.replace(p, from.size(), to);
    }
    old[k] = t;
  }
  ASSERT_TRUE((*b)->LoadLegacyStateDict(old, transformer::LoadMode::kStrict).ok());
  for (auto& [name, t] : (*b)->StateDict()) EXPECT_TRUE(t.equal((*a)->StateDict().at(name))) << name;
}

TEST(FusedScaleMaskSoftmax, ConstructorRule) {
  FusedScaleMaskSoftmaxOptions o;
  o.softmax_in_fp32 = false;
  o.scale = 2.0;
  EXPECT_FALSE(FusedScaleMaskSoftmax::Create(o).ok());  // scale needs softmax_in_fp32
  o.softmax_in_fp32 = true;
  o.input_in_fp16 = o.input_in_bf16 = true;
  EXPECT_FALSE(FusedScaleMaskSoftmax::Create(o).ok());
}

// The kernel path's autograd wiring (forward from the kernel, backward from the saved output) against autograd
// through the fallback in float64, for each mask form.
TEST(FusedScaleMaskSoftmax, KernelPathMatchesFallbackValuesAndGradients) {
  at::manual_seed(3);
  const int64_t b = 2, np = 4, s = 20;
  for (AttnMaskType type : {AttnMaskType::kCausal, AttnMaskType::kPadding}) {
    for (bool with_mask : {true, false}) {
      FusedScaleMaskSoftmaxOptions o;
      o.attn_mask_type = type;
      o.scale = 0.7;
      auto sm = FusedScaleMaskSoftmax::Create(o);
      ASSERT_TRUE(sm.ok());
      EXPECT_EQ(sm->ChoosePath(at::zeros({b, np, s, s})), SoftmaxPath::kFallback);  // fp32 on CPU
      at::Tensor mask;
      if (type == AttnMaskType::kCausal) {
        mask = CausalAttentionMask(s, at::kCPU);
      } else if (with_mask) {
        mask = at::rand({b, 1, s, s}).lt(0.3);
      }
      const at::Tensor x = at::randn({b, np, s, s});
      const at::Tensor dy = at::randn({b, np, s, s});
      at::Tensor xk = x.clone().requires_grad_(true);
      at::Tensor yk = sm->RunKernelPath(xk, mask);
      yk.backward(dy);
      at::Tensor xr = x.to(at::kDouble).requires_grad_(true);
      at::Tensor yr = sm->RunFallbackPath(xr, mask);
      yr.backward(dy.to(at::kDouble));
      EXPECT_LT((yk.to(at::kDouble) - yr).abs().max().item<double>(), 1e-6);
      EXPECT_LT((xk.grad().to(at::kDouble) - xr.grad()).abs().max().item<double>(), 1e-6);
    }
  }
}

// Closed form: queries k*e_i, contexts e_i -> scores k on the diagonal, 0 elsewhere, so every row's NLL is
// log(1 + (n - 1) exp(-k')) with k' = k (or k / sqrt(d) with score scaling).
TEST(BiEncoder, InBatchContrastiveLossClosedForm) {
  const double k = 2.5;
  const at::Tensor context = at::eye(3, at::kFloat);
  const at::Tensor query = context * k;
  EXPECT_NEAR(InBatchContrastiveLoss(query, context, ScoreScaling::kOff).item<double>(),
              std::log1p(2 * std::exp(-k)), 1e-6);
  EXPECT_NEAR(InBatchContrastiveLoss(query, context, ScoreScaling::kOn).item<double>(),
              std::log1p(2 * std::exp(-k / std::sqrt(3.0))), 1e-6);
}

// A tower is BERT's language model read at [CLS] (what init_state_dict_from_bert relies on); the loss trains both
// towers; a shared model embeds queries and contexts alike.
TEST(BiEncoder, TowersAreBertClsStatesAndBothLearn) {
  at::manual_seed(6);
  const auto config = SmallConfig();
  auto bert = BertModel::Create(config, {}, /*num_tokentypes=*/1, /*add_binary_head=*/false);
  auto bi = BiEncoderModel::Create(config);
  ASSERT_TRUE(bert.ok() && bi.ok());
  std::map<std::string, at::Tensor> towers;
  for (auto& [name, t] : (*bert)->StateDict()) {
    if (name.rfind("language_model.", 0) != 0) continue;
    towers["query_model." + name] = t;
    towers["context_model." + name] = t;
  }
  ASSERT_TRUE((*bi)->LoadStateDict(towers, transformer::LoadMode::kStrict).ok());
  const at::Tensor ids = at::randint(0, config.vocab_size, {3, 10}, at::kLong);
  const at::Tensor types = at::zeros({3, 10}, at::kLong);
  at::Tensor mask = at::ones({3, 10}, at::kLong);
  mask.index_put_({2, at::indexing::Slice(6, 10)}, 0);
  const at::Tensor positions = at::arange(10, at::kLong).unsqueeze(0).expand({3, 10});
  const at::Tensor cls = (*bert)->language_model().Forward(ids, positions, BertExtendedAttentionMask(mask), types)
                             .encoder_output[0];
  const BiEncoderOutput out = (*bi)->Forward(ids, mask, types, ids, mask, types);
  EXPECT_TRUE(out.query.allclose(cls, 1e-6, 1e-6));
  EXPECT_TRUE(out.context.allclose(cls, 1e-6, 1e-6));
  InBatchContrastiveLoss(out.query, out.context, ScoreScaling::kOn).backward();
  for (const auto& [name, p] : (*bi)->NamedParameters()) {
    if (name.find("word_embeddings") != std::string::npos || name.find("pooler") != std::string::npos) continue;
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << name;
  }

  BiEncoderOptions shared;
  shared.shared_query_context_model = true;
  shared.projection_dim = 8;
  auto one = BiEncoderModel::Create(config, {}, shared);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ((*one)->NamedParameters().front().first, "shared_model.language_model.embedding.word_embeddings.weight");
  const BiEncoderOutput same = (*one)->Forward(ids, mask, types, ids, mask, types);
  EXPECT_EQ(same.query.sizes(), (at::IntArrayRef{3, 8}));
  EXPECT_TRUE(same.query.equal(same.context));
}

// ICT towers: the BERT language model's pooled [CLS] state through ict_head, with zero token types; the keys are
// query_model.* and context_model.*.
TEST(Realm, IctTowersArePooledBertStatesThroughTheHead) {
  at::manual_seed(8);
  const auto config = SmallConfig();
  auto ict = ICTBertModel::Create(config, /*ict_head_size=*/6);
  auto bert = BertModel::Create(config);  // two token types, pooler: the language model an IR tower holds
  ASSERT_TRUE(ict.ok() && bert.ok());
  EXPECT_FALSE(ICTBertModel::Create(config, 0).ok());
  std::map<std::string, at::Tensor> state;
  const at::Tensor head_w = at::randn({6, config.hidden_size}), head_b = at::randn({6});
  for (auto& [name, t] : (*bert)->StateDict()) {
    if (name.rfind("language_model.", 0) != 0) continue;
    state["query_model." + name] = t;
    state["context_model." + name] = t;
  }
  for (const char* tower : {"query_model.", "context_model."}) {
    state[std::string(tower) + "ict_head.weight"] = head_w;
    state[std::string(tower) + "ict_head.bias"] = head_b;
  }
  ASSERT_TRUE((*ict)->LoadStateDict(state, transformer::LoadMode::kStrict).ok());
  const at::Tensor ids = at::randint(0, config.vocab_size, {2, 9}, at::kLong);
  at::Tensor mask = at::ones({2, 9}, at::kLong);
  mask.index_put_({1, at::indexing::Slice(5, 9)}, 0);
  const at::Tensor positions = at::arange(9, at::kLong).unsqueeze(0).expand({2, 9});
  const at::Tensor pooled =
      (*bert)->language_model().Forward(ids, positions, BertExtendedAttentionMask(mask), at::zeros_like(ids)).pooled;
  const at::Tensor expected = at::linear(pooled, head_w, head_b);
  auto [q, b] = (*ict)->Forward(ids, mask, ids, mask);
  EXPECT_TRUE(q.allclose(expected, 1e-6, 1e-6));
  EXPECT_TRUE(b.allclose(expected, 1e-6, 1e-6));
}

}  // namespace
}  // namespace megatron::legacy
