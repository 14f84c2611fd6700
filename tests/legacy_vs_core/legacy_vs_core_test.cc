// The legacy tree against the core tree (which tests/hf_parity and tests/hf_parity_bert_t5 check against
// HuggingFace transformers): a core model's weights, converted with legacy/checkpoint (research notes §5.7),
// make the legacy model give the same logits, per-token losses and gradients (fp32, relative difference
// <= 1e-6 of the largest magnitude), on the FusedScaleMaskSoftmax fallback path (the CPU path; the fused kernels
// need fp16/bf16 on a GPU). Also: state-dict round trips are exact, and checkpoints written by one tree load into
// the other only after conversion, with one message naming the first mismatching tensor.
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "legacy/checkpoint/convert.h"
#include "legacy/model/bert_model.h"
#include "legacy/model/gpt_model.h"
#include "legacy/model/t5_model.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/models/bert/bert_model.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/T5/t5_model.h"

namespace megatron {
namespace {

using legacy::ModelFamily;
using transformer::TransformerConfig;

constexpr double kRelTol = 1e-6;

double RelDiff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kDouble), y = b.detach().to(at::kDouble);
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-30);
}

TransformerConfig GptConfig() {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_query_groups = 4;
  c.kv_channels = 8;
  c.ffn_hidden_size = 64;
  c.vocab_size = 96;
  c.max_position_embeddings = 16;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  return c;
}

// Gradients of every parameter, keyed by core names (legacy ones converted).
std::map<std::string, at::Tensor> Grads(const transformer::MegatronModule& m, bool legacy_names, ModelFamily f) {
  std::map<std::string, at::Tensor> g;
  for (const auto& [name, p] : m.NamedParameters()) {
    g[name] = p.grad().defined() ? p.grad() : at::zeros_like(p);
  }
  if (!legacy_names) return g;
  auto core = legacy::LegacyToCore(g, f);
  TORCH_CHECK(core.ok(), core.status().ToString());
  return *core;
}

void ExpectSameGradients(const std::map<std::string, at::Tensor>& legacy, const std::map<std::string, at::Tensor>& core) {
  ASSERT_EQ(legacy.size(), core.size());
  for (const auto& [name, g] : core) {
    ASSERT_TRUE(legacy.count(name)) << name;
    EXPECT_LE(RelDiff(legacy.at(name), g), kRelTol) << name;
  }
}

struct GptCase {
  const char* label;
  TransformerConfig config;
  legacy::LegacyOptions options;
};

class GptEquivalence : public ::testing::TestWithParam<int> {};

GptCase MakeGptCase(int i) {
  GptCase c{"layernorm_gelu_mha_tied", GptConfig(), {}};
  if (i == 1) {
    c.label = "rmsnorm_swiglu_gqa_nobias_untied";
    c.config.normalization = transformer::Normalization::kRMSNorm;
    c.config.activation = transformer::Activation::kSwiGLU;
    c.config.num_query_groups = 2;
    c.config.add_bias_linear = false;
    c.config.add_qkv_bias = false;
    c.config.share_embeddings_and_output_weights = false;
  } else if (i == 2) {
    c.label = "query_key_layer_scaling";
    c.options.apply_query_key_layer_scaling = true;
  }
  return c;
}

TEST_P(GptEquivalence, SameLogitsLossAndGradients) {
  const GptCase c = MakeGptCase(GetParam());
  SCOPED_TRACE(c.label);
  at::manual_seed(11 + GetParam());
  auto core = models::GPTModel::Create(c.config);
  ASSERT_TRUE(core.ok()) << core.status();
  auto old = legacy::GPTModel::Create(c.config, c.options);
  ASSERT_TRUE(old.ok()) << old.status();
  auto converted = legacy::CoreToLegacy((*core)->StateDict(), ModelFamily::kGpt);
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_TRUE((*old)->LoadStateDict(*converted, transformer::LoadMode::kStrict).ok());

  const at::Tensor ids = at::randint(0, c.config.vocab_size, {3, 13}, at::kLong);
  const at::Tensor labels = at::randint(0, c.config.vocab_size, {3, 13}, at::kLong);
  EXPECT_LE(RelDiff((*old)->Logits(ids), (*core)->Logits(ids, {})), kRelTol);

  const at::Tensor core_loss = (*core)->Loss(ids, {}, labels);
  const at::Tensor old_loss = (*old)->Loss(ids, {}, {}, labels);
  ASSERT_EQ(old_loss.sizes(), core_loss.sizes());
  EXPECT_LE(RelDiff(old_loss, core_loss), kRelTol);
  core_loss.mean().backward();
  old_loss.mean().backward();
  ExpectSameGradients(Grads(**old, true, ModelFamily::kGpt), Grads(**core, false, ModelFamily::kGpt));
}

INSTANTIATE_TEST_SUITE_P(Configs, GptEquivalence, ::testing::Values(0, 1, 2));

TEST(BertEquivalence, SameLogitsLossAndGradientsOnRealTokens) {
  TransformerConfig config = GptConfig();
  config.attn_mask_type = transformer::AttnMask::kPadding;
  at::manual_seed(5);
  auto core = models::BertModel::Create(config);
  ASSERT_TRUE(core.ok()) << core.status();
  auto old = legacy::BertModel::Create(config);
  ASSERT_TRUE(old.ok()) << old.status();
  auto converted = legacy::CoreToLegacy((*core)->StateDict(), ModelFamily::kBert);
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_TRUE((*old)->LoadStateDict(*converted, transformer::LoadMode::kStrict).ok());

  const int64_t b = 2, s = 12;
  const at::Tensor ids = at::randint(0, config.vocab_size, {b, s}, at::kLong);
  const at::Tensor types = at::randint(0, 2, {b, s}, at::kLong);
  at::Tensor padding = at::ones({b, s}, at::kLong);
  padding.index_put_({1, at::indexing::Slice(8, s)}, 0);  // the second sample has 8 real tokens
  const at::Tensor labels = at::randint(0, config.vocab_size, {b, s}, at::kLong);
  const at::Tensor loss_mask = at::rand({b, s}).lt(0.5).logical_and(padding.eq(1)).to(at::kFloat);
  const at::Tensor order = at::tensor({0, 1}, at::kLong);

  // Logits agree on real positions (padded query rows differ by design: see legacy/model/bert_model.h).
  const auto core_out = (*core)->Forward(ids, padding, types);
  const auto old_out = (*old)->Forward(ids, padding, types);
  const at::Tensor real = padding.eq(1);
  EXPECT_LE(RelDiff(old_out.lm.index({real}), core_out.lm.index({real})), kRelTol);
  EXPECT_LE(RelDiff(old_out.binary_logits, core_out.binary_logits), kRelTol);

  const auto core_l = (*core)->Forward(ids, padding, types, labels);
  const auto old_l = (*old)->Forward(ids, padding, types, labels);
  EXPECT_LE(RelDiff(old_l.lm.index({real}), core_l.lm.index({real})), kRelTol);
  const at::Tensor core_loss = models::BertPretrainingLoss(core_l.lm, loss_mask, core_l.binary_logits, order);
  const at::Tensor old_loss = models::BertPretrainingLoss(old_l.lm, loss_mask, old_l.binary_logits, order);
  EXPECT_LE(RelDiff(old_loss, core_loss), kRelTol);
  core_loss.backward();
  old_loss.backward();
  ExpectSameGradients(Grads(**old, true, ModelFamily::kBert), Grads(**core, false, ModelFamily::kBert));
}

// T5 with learned absolute positions (the legacy T5 has no relative bias); the encoder's second sample is padded.
TEST(T5Equivalence, SameLogitsLossAndGradients) {
  TransformerConfig config = GptConfig();
  at::manual_seed(21);
  auto core = models::T5Model::Create(config);
  ASSERT_TRUE(core.ok()) << core.status();
  auto old = legacy::T5Model::Create(config);
  ASSERT_TRUE(old.ok()) << old.status();
  auto converted = legacy::CoreToLegacy((*core)->StateDict(), ModelFamily::kT5);
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_TRUE((*old)->LoadStateDict(*converted, transformer::LoadMode::kStrict).ok());
  auto back = legacy::LegacyToCore(*converted, ModelFamily::kT5);
  ASSERT_TRUE(back.ok()) << back.status();
  for (const auto& [name, t] : (*core)->StateDict()) EXPECT_TRUE(back->at(name).equal(t)) << name;
  auto kind = legacy::DetectCheckpointKind(*converted);
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(kind->family, ModelFamily::kT5);

  const at::Tensor enc = at::randint(0, config.vocab_size, {2, 11}, at::kLong);
  const at::Tensor dec = at::randint(0, config.vocab_size, {2, 9}, at::kLong);
  const at::Tensor labels = at::randint(0, config.vocab_size, {2, 9}, at::kLong);
  at::Tensor mask = at::ones({2, 11}, at::kLong);
  mask.index_put_({1, at::indexing::Slice(7, 11)}, 0);
  EXPECT_LE(RelDiff((*old)->Logits(enc, dec, mask), (*core)->Logits(enc, dec, mask)), kRelTol);
  const at::Tensor core_loss = (*core)->Loss(enc, dec, mask, labels);
  const at::Tensor old_loss = (*old)->Loss(enc, dec, mask, labels);
  EXPECT_LE(RelDiff(old_loss, core_loss), kRelTol);
  core_loss.mean().backward();
  old_loss.mean().backward();
  ExpectSameGradients(Grads(**old, true, ModelFamily::kT5), Grads(**core, false, ModelFamily::kT5));
}

TEST(Conversion, StateDictRoundTripsAreExact) {
  at::manual_seed(2);
  for (ModelFamily f : {ModelFamily::kGpt, ModelFamily::kBert}) {
    TransformerConfig config = GptConfig();
    std::map<std::string, at::Tensor> core_state;
    if (f == ModelFamily::kGpt) {
      config.share_embeddings_and_output_weights = false;  // exercise output_layer too
      core_state = (*models::GPTModel::Create(config))->StateDict();
    } else {
      core_state = (*models::BertModel::Create(config))->StateDict();
    }
    auto legacy_state = legacy::CoreToLegacy(core_state, f);
    ASSERT_TRUE(legacy_state.ok()) << legacy_state.status();
    auto back = legacy::LegacyToCore(*legacy_state, f);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ(back->size(), core_state.size());
    for (const auto& [name, t] : core_state) EXPECT_TRUE(back->at(name).equal(t)) << name;
    auto kind = legacy::DetectCheckpointKind(*legacy_state);
    ASSERT_TRUE(kind.ok());
    EXPECT_EQ(kind->tree, legacy::Tree::kLegacy);
    EXPECT_EQ(kind->family, f);
  }
}

std::string TempDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(root != nullptr ? root : "/tmp") + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(Conversion, CheckpointsLoadAcrossTreesOnlyAfterConversion) {
  at::manual_seed(4);
  const TransformerConfig config = GptConfig();
  auto core = models::GPTModel::Create(config);
  auto old = legacy::GPTModel::Create(config);
  ASSERT_TRUE(core.ok() && old.ok());
  checkpointing::Checkpoint ckpt;
  ckpt.iteration = 7;
  ckpt.model = (*core)->StateDict();
  const std::string core_dir = TempDir("core_gpt");
  ASSERT_TRUE(checkpointing::SaveCheckpoint(core_dir, ckpt).ok());

  // The core checkpoint into the legacy model: one message, the first tensor, the command; model untouched.
  const auto before = (*old)->StateDict();
  absl::Status s = legacy::LoadModelCheckpoint(core_dir, legacy::Tree::kLegacy, ModelFamily::kGpt, old->get());
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_NE(msg.find("'language_model.embedding.word_embeddings.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bazel run //tools:convert_checkpoint -- --model=gpt --direction=core_to_legacy"),
            std::string::npos)
      << msg;
  for (const auto& [name, t] : (*old)->StateDict()) EXPECT_TRUE(t.equal(before.at(name))) << name;

  // Into a BERT model: the family is named.
  auto bert = models::BertModel::Create(config);
  s = legacy::LoadModelCheckpoint(core_dir, legacy::Tree::kCore, ModelFamily::kBert, bert->get());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("load it into a gpt model"), std::string::npos) << s.message();

  // The wrong direction writes nothing.
  const std::string bad_out = TempDir("bad_out");
  s = legacy::ConvertCheckpoint(core_dir, bad_out, ModelFamily::kGpt, legacy::Direction::kLegacyToCore);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("holds a core gpt checkpoint"), std::string::npos) << s.message();
  EXPECT_FALSE(std::filesystem::exists(bad_out));

  // Converted: loads into the legacy model and gives the core model's logits; back again is bit-identical.
  const std::string legacy_dir = TempDir("legacy_gpt"), back_dir = TempDir("back_gpt");
  ASSERT_TRUE(legacy::ConvertCheckpoint(core_dir, legacy_dir, ModelFamily::kGpt, legacy::Direction::kCoreToLegacy).ok());
  ASSERT_TRUE(legacy::LoadModelCheckpoint(legacy_dir, legacy::Tree::kLegacy, ModelFamily::kGpt, old->get()).ok());
  const at::Tensor ids = at::randint(0, config.vocab_size, {2, 9}, at::kLong);
  EXPECT_LE(RelDiff((*old)->Logits(ids), (*core)->Logits(ids, {})), kRelTol);
  ASSERT_TRUE(legacy::ConvertCheckpoint(legacy_dir, back_dir, ModelFamily::kGpt, legacy::Direction::kLegacyToCore).ok());
  auto back = checkpointing::LoadCheckpoint(back_dir, 7, checkpointing::LoadParts::kModelOnly);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->model.size(), ckpt.model.size());
  for (const auto& [name, t] : ckpt.model) EXPECT_TRUE(back->model.at(name).equal(t)) << name;

  // Same tree, other shapes: the tensor and both shapes are named.
  TransformerConfig wider = config;
  wider.ffn_hidden_size = 128;
  auto other = models::GPTModel::Create(wider);
  s = legacy::LoadModelCheckpoint(core_dir, legacy::Tree::kCore, ModelFamily::kGpt, other->get());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("'decoder.layers.0.mlp.linear_fc1.weight' has shape [64, 32]"),
            std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace megatron
