// Core GPT models exported to HuggingFace directories: loading a transformers fixture (GPT-2, Llama, Qwen2) and
// exporting it gives back exactly the fixture's tensors (bit for bit) and a config.json that reads back to the
// same model; shapes a family cannot express are refused with a message naming the mismatch.
// (tests/hf_parity/verify_hf_export.py checks, outside bazel test, that transformers loads such exports.)
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_export.h"
#include "megatron/core/models/huggingface/hf_loader.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron {
namespace {

namespace hf = models::huggingface;

std::unique_ptr<models::GPTModel> LoadFixture(const std::string& dir, hf::HfModelInfo* info) {
  auto i = hf::ReadHfModelInfo(dir, proto::ModelConfig());
  EXPECT_TRUE(i.ok()) << i.status();
  if (!i.ok()) return nullptr;
  *info = *i;
  auto model = models::GPTModel::Create(i->config);
  EXPECT_TRUE(model.ok()) << model.status();
  absl::Status s = hf::LoadHfWeights(dir, **model);
  EXPECT_TRUE(s.ok()) << s;
  return std::move(*model);
}

class HfExport : public ::testing::TestWithParam<std::string> {};

TEST_P(HfExport, RoundTripIsTensorEqual) {
  const std::string dir = "tests/hf_parity/testdata/" + GetParam();
  hf::HfModelInfo info;
  auto model = LoadFixture(dir, &info);
  ASSERT_NE(model, nullptr);
  const std::string out = ::testing::TempDir() + "/export_" + GetParam();
  absl::Status s = hf::SaveHfLanguageModel(*model, info.model_type, out);
  ASSERT_TRUE(s.ok()) << s;

  auto original = checkpointing::LoadSafetensors(dir + "/model.safetensors");
  auto exported = checkpointing::LoadSafetensors(out + "/model.safetensors");
  ASSERT_TRUE(original.ok() && exported.ok());
  ASSERT_EQ(exported->size(), original->size());
  for (const auto& [name, t] : *original) {
    auto it = exported->find(name);
    ASSERT_NE(it, exported->end()) << name;
    EXPECT_TRUE(it->second.equal(t)) << name;
  }
  auto again = hf::ReadHfModelInfo(out, proto::ModelConfig());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->model_type, info.model_type);
  EXPECT_EQ(again->config.DebugString(), info.config.DebugString());
  EXPECT_EQ(again->config.rotary_base, info.config.rotary_base);
  EXPECT_EQ(again->config.layernorm_epsilon, info.config.layernorm_epsilon);
  EXPECT_EQ(again->config.max_position_embeddings, info.config.max_position_embeddings);
}

INSTANTIATE_TEST_SUITE_P(Models, HfExport, ::testing::Values("gpt2", "llama", "qwen2"));

// Shapes the fixtures do not cover (Llama with biases, Mistral, untied Qwen2, GPT-2 with exact GeLU): a random
// model exported and loaded back by hf_loader (which the fixtures check against transformers) is the same model.
TEST(HfExport, ExportThenLoadIsIdentity) {
  struct Case {
    std::string model_type;
    bool bias;
    bool tied;
  };
  for (const Case& k : {Case{"llama", true, false}, Case{"mistral", false, true}, Case{"qwen2", false, false},
                        Case{"gpt2", true, true}}) {
    transformer::TransformerConfig c;
    c.num_layers = 2;
    c.hidden_size = 24;
    c.num_attention_heads = 6;
    c.num_query_groups = 6;
    c.kv_channels = 4;
    c.ffn_hidden_size = 20;
    c.vocab_size = 31;
    c.max_position_embeddings = 16;
    c.rotary_base = 5000;
    c.share_embeddings_and_output_weights = k.tied;
    c.add_bias_linear = k.bias;
    c.add_qkv_bias = k.bias || k.model_type == "qwen2";
    if (k.model_type == "gpt2") {
      c.activation = transformer::Activation::kGelu;
    } else {
      c.num_query_groups = 3;
      c.normalization = transformer::Normalization::kRMSNorm;
      c.activation = transformer::Activation::kSwiGLU;
      c.position_embedding_type = transformer::PositionEmbedding::kRope;
    }
    auto model = models::GPTModel::Create(c);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::string out = ::testing::TempDir() + "/identity_" + k.model_type;
    absl::Status s = hf::SaveHfLanguageModel(**model, k.model_type, out);
    ASSERT_TRUE(s.ok()) << k.model_type << ": " << s;
    auto info = hf::ReadHfModelInfo(out, proto::ModelConfig());
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->model_type, k.model_type);
    auto again = models::GPTModel::Create(info->config);
    ASSERT_TRUE(again.ok()) << again.status();
    s = hf::LoadHfWeights(out, **again);
    ASSERT_TRUE(s.ok()) << k.model_type << ": " << s;
    auto before = (*model)->StateDict(), after = (*again)->StateDict();
    ASSERT_EQ(before.size(), after.size()) << k.model_type;
    for (const auto& [name, t] : before) {
      ASSERT_EQ(after.count(name), 1u) << k.model_type << " " << name;
      EXPECT_TRUE(after.at(name).equal(t)) << k.model_type << " " << name;
    }
  }
}

TEST(HfExportErrors, FamiliesRefuseShapesTheyCannotExpress) {
  hf::HfModelInfo info;
  auto llama = LoadFixture("tests/hf_parity/testdata/llama", &info);
  ASSERT_NE(llama, nullptr);
  auto as_gpt2 = hf::HfLanguageModelConfig(llama->config(), "gpt2");
  ASSERT_FALSE(as_gpt2.ok());
  EXPECT_TRUE(absl::StrContains(as_gpt2.status().message(), "LayerNorm")) << as_gpt2.status();
  // Qwen2 always has q/k/v biases; this Llama has none.
  auto as_qwen2 = hf::HfLanguageModelConfig(llama->config(), "qwen2");
  ASSERT_FALSE(as_qwen2.ok());
  EXPECT_TRUE(absl::StrContains(as_qwen2.status().message(), "add_qkv_bias")) << as_qwen2.status();
  EXPECT_FALSE(hf::HfLanguageModelConfig(llama->config(), "bloom").ok());
  // A state dict missing a tensor is named.
  auto state = llama->StateDict();
  state.erase("decoder.layers.1.mlp.linear_fc2.weight");
  auto exported = hf::ExportHfStateDict(state, llama->config(), "llama");
  ASSERT_FALSE(exported.ok());
  EXPECT_TRUE(absl::StrContains(exported.status().message(), "decoder.layers.1.mlp.linear_fc2.weight"));
}

}  // namespace
}  // namespace megatron
