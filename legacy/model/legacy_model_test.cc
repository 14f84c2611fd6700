// Unit tests of the legacy tree's own pieces: Megatron's checkpoint key upgrades, FusedScaleMaskSoftmax's
// constructor rule and both paths (the kernel path through its autograd function, on CPU via the float64
// reference kernel, against autograd of the fallback), and the legacy parameter names of research notes §5.7.
// Model-level numerics are checked against the core models in tests/legacy_vs_core.
#include <map>
#include <set>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "legacy/model/bert_model.h"
#include "legacy/model/fused_softmax.h"
#include "legacy/model/gpt_model.h"
#include "legacy/model/module.h"

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

}  // namespace
}  // namespace megatron::legacy
