// The core GPT model against HuggingFace transformers on tiny random models (fixtures made by
// make_fixtures.py with transformers/PyTorch): logits, per-token loss, and the gradient of every parameter.
// GPT-2 covers LayerNorm + gelu_new + learned positions + tied output; Llama covers RMSNorm + SwiGLU + RoPE + GQA;
// Qwen2 adds q/k/v biases and tied embeddings (fixture: make_vision_fixtures.py).
#include <map>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_loader.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"

namespace megatron {
namespace {

constexpr double kRelTol = 1e-5;

// max |a - b| / max |b|: the relative error of a tensor as a whole.
double RelativeError(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = expected.abs().max().item<double>();
  return (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>() / std::max(scale, 1e-30);
}

struct Loaded {
  std::unique_ptr<models::GPTModel> model;
  models::huggingface::HfModelInfo info;
  std::map<std::string, at::Tensor> expected;
};

Loaded Load(const std::string& name) {
  const std::string dir = "tests/hf_parity/testdata/" + name;
  proto::ModelConfig recipe_model;
  recipe_model.set_hidden_dropout(0);
  recipe_model.set_attention_dropout(0);
  Loaded out;
  auto info = models::huggingface::ReadHfModelInfo(dir, recipe_model);
  EXPECT_TRUE(info.ok()) << info.status();
  out.info = *info;
  auto model = models::GPTModel::Create(info->config);
  EXPECT_TRUE(model.ok()) << model.status();
  out.model = std::move(*model);
  absl::Status s = models::huggingface::LoadHfWeights(dir, *out.model);
  EXPECT_TRUE(s.ok()) << s;
  auto expected = checkpointing::LoadSafetensors(dir + "/expected.safetensors");
  EXPECT_TRUE(expected.ok()) << expected.status();
  out.expected = std::move(*expected);
  out.model->SetTraining(false);
  return out;
}

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LogitsMatch) {
  Loaded l = Load(GetParam());
  at::NoGradGuard no_grad;
  at::Tensor logits = l.model->Logits(l.expected.at("input_ids"), at::Tensor());
  ASSERT_EQ(logits.sizes(), l.expected.at("logits").sizes());
  EXPECT_LE(RelativeError(logits, l.expected.at("logits")), kRelTol);
  // Against the float64 forward too: fp32 rounding only.
  EXPECT_LE(RelativeError(logits, l.expected.at("logits_fp64")), 1e-5);
}

TEST_P(HfParity, LossAndEveryGradientMatch) {
  Loaded l = Load(GetParam());
  at::Tensor per_token = l.model->Loss(l.expected.at("input_ids"), at::Tensor(), l.expected.at("labels"));
  EXPECT_LE(RelativeError(per_token, l.expected.at("per_token_loss")), kRelTol);
  at::Tensor loss = per_token.mean();
  EXPECT_NEAR(loss.item<double>(), l.expected.at("loss").item<double>(), kRelTol * l.expected.at("loss").item<double>());
  loss.backward();

  std::map<std::string, at::Tensor> hf_grads;
  for (const auto& [name, tensor] : l.expected) {
    if (name.rfind("grad.", 0) == 0) hf_grads[name.substr(5)] = tensor;
  }
  auto expected_grads = models::huggingface::ConvertHfStateDict(hf_grads, l.info);
  ASSERT_TRUE(expected_grads.ok()) << expected_grads.status();
  int checked = 0;
  for (const auto& [name, param] : l.model->NamedParameters()) {
    auto it = expected_grads->find(name);
    ASSERT_NE(it, expected_grads->end()) << "no HF gradient for " << name;
    ASSERT_TRUE(param.grad().defined()) << name;
    EXPECT_LE(RelativeError(param.grad(), it->second), kRelTol) << name;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(expected_grads->size()));
}

INSTANTIATE_TEST_SUITE_P(Models, HfParity, ::testing::Values("gpt2", "llama", "qwen2"));

TEST(HfConfig, ErrorsNameTheFileAndField) {
  const std::string dir = ::testing::TempDir() + "/bad_hf";
  ASSERT_TRUE(utils::MakeDirectories(dir).ok());
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", R"({"model_type": "gpt2", "n_embd": 32})").ok());
  auto info = models::huggingface::ReadHfModelInfo(dir, proto::ModelConfig());
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find(dir + "/config.json"), std::string::npos) << info.status();
  EXPECT_NE(info.status().message().find("n_layer"), std::string::npos) << info.status();

  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", R"({"model_type": "bloom"})").ok());
  info = models::huggingface::ReadHfModelInfo(dir, proto::ModelConfig());
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("model_type"), std::string::npos) << info.status();

  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", "{not json").ok());
  EXPECT_FALSE(models::huggingface::ReadHfModelInfo(dir, proto::ModelConfig()).ok());
}

}  // namespace
}  // namespace megatron
