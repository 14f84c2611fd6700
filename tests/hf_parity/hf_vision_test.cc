// The core CLIPViTModel built from HuggingFace CLIPVisionModel / SiglipVisionModel checkpoints (fixtures made by
// make_vision_fixtures.py with transformers): last_hidden_state and the gradient of every parameter of a scalar
// loss, full-model configs with sharded checkpoints, the export back to HF's names (tensor-equal round trip),
// and errors that name the file and field.
#include <map>
#include <string>
#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/models/huggingface/hf_vision.h"
#include "megatron/core/utils/file_io.h"

namespace megatron {
namespace {

using models::huggingface::HfVisionModel;

constexpr double kRelTol = 1e-5;
const std::string kTestdata = "tests/hf_parity/testdata/";

double RelativeError(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = expected.abs().max().item<double>();
  return (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>() / std::max(scale, 1e-30);
}

std::map<std::string, at::Tensor> Load(const std::string& path) {
  auto t = checkpointing::LoadSafetensors(path);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::map<std::string, at::Tensor>{};
}

HfVisionModel LoadModel(const std::string& dir) {
  absl::StatusOr<HfVisionModel> m = models::huggingface::LoadHfVisionModel(dir);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  m->model->SetTraining(false);
  return std::move(*m);
}

class HfVision : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return kTestdata + GetParam(); }
};

TEST_P(HfVision, LastHiddenStateMatches) {
  HfVisionModel m = LoadModel(dir());
  ASSERT_NE(m.model, nullptr);
  auto expected = Load(dir() + "/expected.safetensors");
  at::NoGradGuard no_grad;
  at::Tensor out = m.model->Forward(expected.at("pixel_values"));
  ASSERT_EQ(out.sizes(), expected.at("last_hidden_state").sizes());
  EXPECT_LE(RelativeError(out, expected.at("last_hidden_state")), kRelTol);
  EXPECT_LE(RelativeError(out, expected.at("last_hidden_state_fp64")), kRelTol);
}

TEST_P(HfVision, EveryGradientMatches) {
  HfVisionModel m = LoadModel(dir());
  ASSERT_NE(m.model, nullptr);
  auto expected = Load(dir() + "/expected.safetensors");
  at::Tensor loss = (m.model->Forward(expected.at("pixel_values")) * expected.at("probe")).sum();
  EXPECT_NEAR(loss.item<double>(), expected.at("loss").item<double>(),
              kRelTol * std::abs(expected.at("loss").item<double>()));
  loss.backward();
  std::map<std::string, at::Tensor> hf_grads;
  for (const auto& [name, t] : expected) {
    if (absl::StartsWith(name, "grad.")) hf_grads[name.substr(5)] = t;
  }
  auto grads = models::huggingface::ConvertHfVisionStateDict(hf_grads, m.model->config());
  ASSERT_TRUE(grads.ok()) << grads.status();
  int checked = 0;
  for (const auto& [name, param] : m.model->NamedParameters()) {
    auto it = grads->find(name);
    ASSERT_NE(it, grads->end()) << "no HF gradient for " << name;
    ASSERT_TRUE(param.grad().defined()) << name;
    EXPECT_LE(RelativeError(param.grad(), it->second), kRelTol) << name;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(grads->size()));
  EXPECT_EQ(checked, static_cast<int>(m.model->NamedParameters().size()));
}

// The export holds exactly the fixture's tensors (with the "vision_model." prefix every transformers version
// loads), bit for bit, and its config.json describes the same encoder.
TEST_P(HfVision, ExportRoundTripIsTensorEqual) {
  HfVisionModel m = LoadModel(dir());
  ASSERT_NE(m.model, nullptr);
  const std::string out = ::testing::TempDir() + "/export_" + GetParam();
  ASSERT_TRUE(models::huggingface::SaveHfVisionModel(*m.model, out, m.extras).ok());
  auto original = Load(dir() + "/model.safetensors");
  auto exported = Load(out + "/model.safetensors");
  ASSERT_EQ(exported.size(), original.size());
  for (const auto& [name, t] : original) {
    auto it = exported.find("vision_model." + name);
    ASSERT_NE(it, exported.end()) << name;
    EXPECT_TRUE(it->second.equal(t)) << name;
  }
  auto info = models::huggingface::ReadHfVisionInfo(out);
  ASSERT_TRUE(info.ok()) << info.status();
  auto ref = models::huggingface::ReadHfVisionInfo(dir());
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(info->config.transformer.DebugString(), ref->config.transformer.DebugString());
  EXPECT_EQ(info->config.transformer.layernorm_epsilon, ref->config.transformer.layernorm_epsilon);
  EXPECT_EQ(info->config.seq_length(), ref->config.seq_length());
  EXPECT_EQ(info->model_type, ref->model_type);
}

// Without the pooler-only extras the export is still a complete HF model: CLIP gets an identity post_layernorm,
// SigLIP drops its head (vision_use_head false), and last_hidden_state is unchanged.
TEST_P(HfVision, ExportWithoutExtrasReloads) {
  HfVisionModel m = LoadModel(dir());
  ASSERT_NE(m.model, nullptr);
  const std::string out = ::testing::TempDir() + "/export_bare_" + GetParam();
  ASSERT_TRUE(models::huggingface::SaveHfVisionModel(*m.model, out).ok());
  auto exported = Load(out + "/model.safetensors");
  for (const auto& [name, t] : exported) EXPECT_FALSE(absl::StrContains(name, ".head.")) << name;
  HfVisionModel again = LoadModel(out);
  ASSERT_NE(again.model, nullptr);
  auto expected = Load(dir() + "/expected.safetensors");
  at::NoGradGuard no_grad;
  EXPECT_TRUE(again.model->Forward(expected.at("pixel_values")).equal(m.model->Forward(expected.at("pixel_values"))));
}

INSTANTIATE_TEST_SUITE_P(Models, HfVision, ::testing::Values("clip_vision", "siglip_vision"));

TEST(HfVisionExtras, PoolerOnlyTensorsAreKept) {
  HfVisionModel clip = LoadModel(kTestdata + "clip_vision");
  ASSERT_NE(clip.model, nullptr);
  EXPECT_EQ(clip.extras.size(), 2u);
  EXPECT_EQ(clip.extras.count("post_layernorm.weight"), 1u);
  HfVisionModel siglip = LoadModel(kTestdata + "siglip_vision");
  ASSERT_NE(siglip.model, nullptr);
  EXPECT_EQ(siglip.extras.size(), 11u);  // probe, attention (4), layernorm (2), mlp (4)
  EXPECT_EQ(siglip.extras.count("head.probe"), 1u);
}

// A full CLIPModel / SiglipModel directory: config with vision_config, the text tower, projections and logit
// scale/bias in the checkpoint, "vision_model." prefixes, and two shards named by model.safetensors.index.json.
class HfVisionFullModel : public HfVision {};

TEST_P(HfVisionFullModel, ShardedCheckpointWithTextTower) {
  const bool clip = GetParam() == "clip_vision";
  const std::string dir = ::testing::TempDir() + "/full_" + GetParam();
  ASSERT_TRUE(utils::MakeDirectories(dir).ok());
  auto vision_config = utils::ReadFile(this->dir() + "/config.json");
  ASSERT_TRUE(vision_config.ok());
  nlohmann::json config = {{"model_type", clip ? "clip" : "siglip"},
                           {"architectures", {clip ? "CLIPModel" : "SiglipModel"}},
                           {"vision_config", nlohmann::json::parse(*vision_config)},
                           {"text_config", {{"hidden_size", 8}}}};
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", config.dump()).ok());
  auto tensors = Load(this->dir() + "/model.safetensors");
  std::map<std::string, at::Tensor> shard[2];
  nlohmann::json weight_map;
  int i = 0;
  for (const auto& [name, t] : tensors) {
    const int s = i++ % 2;
    shard[s]["vision_model." + name] = t;
    weight_map["vision_model." + name] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  shard[0]["text_model.embeddings.token_embedding.weight"] = at::zeros({4, 8});
  shard[1]["logit_scale"] = at::zeros({});
  shard[1][clip ? "visual_projection.weight" : "logit_bias"] = at::zeros({clip ? 8 : 1});
  for (int s = 0; s < 2; ++s) {
    for (const auto& [name, t] : shard[s]) {
      if (!absl::StartsWith(name, "vision_model.")) {
        weight_map[name] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
      }
    }
    ASSERT_TRUE(checkpointing::SaveSafetensors(dir + "/model-0000" + std::to_string(s + 1) + "-of-00002.safetensors",
                                               shard[s])
                    .ok());
  }
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/model.safetensors.index.json",
                                         nlohmann::json{{"weight_map", weight_map}}.dump())
                  .ok());
  HfVisionModel m = LoadModel(dir);
  ASSERT_NE(m.model, nullptr);
  auto expected = Load(this->dir() + "/expected.safetensors");
  at::NoGradGuard no_grad;
  EXPECT_LE(RelativeError(m.model->Forward(expected.at("pixel_values")), expected.at("last_hidden_state")), kRelTol);
}

INSTANTIATE_TEST_SUITE_P(Models, HfVisionFullModel, ::testing::Values("clip_vision", "siglip_vision"));

TEST(HfVisionWeights, ShapeMismatchIsNamed) {
  auto info = models::huggingface::ReadHfVisionInfo(kTestdata + "clip_vision");
  ASSERT_TRUE(info.ok()) << info.status();
  models::vision::VisionConfig c = info->config;
  c.transformer.ffn_hidden_size = 40;
  auto model = models::vision::CLIPViTModel::Create(c);
  ASSERT_TRUE(model.ok());
  absl::Status s = models::huggingface::LoadHfVisionWeights(kTestdata + "clip_vision", **model);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "mlp.linear_fc1.weight")) << s;
}

TEST(HfVisionConfig, ErrorsNameTheFileAndField) {
  const std::string dir = ::testing::TempDir() + "/bad_vision";
  ASSERT_TRUE(utils::MakeDirectories(dir).ok());
  auto expect_error = [&](const std::string& json, const std::string& needle) {
    ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", json).ok());
    auto info = models::huggingface::ReadHfVisionInfo(dir);
    ASSERT_FALSE(info.ok()) << json;
    EXPECT_TRUE(absl::StrContains(info.status().message(), dir + "/config.json")) << info.status();
    EXPECT_TRUE(absl::StrContains(info.status().message(), needle)) << info.status();
  };
  expect_error(R"({"model_type": "clip"})", "vision_config");
  expect_error(R"({"model_type": "llava"})", "model_type");
  expect_error(R"({"model_type": "siglip_vision_model", "hidden_act": "swish"})", "hidden_act");
  expect_error(R"({"model_type": "clip_vision_model", "image_size": 225, "patch_size": 14})", "img_h");
  expect_error(R"({"model_type": "clip_vision_model", "hidden_size": "big"})", "hidden_size");
  // Sparse configs take transformers' defaults (SigLIP: 224 px, patch 16, 12 layers).
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", R"({"model_type": "siglip_vision_model"})").ok());
  auto info = models::huggingface::ReadHfVisionInfo(dir);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->config.seq_length(), 196);
  EXPECT_EQ(info->config.transformer.num_layers, 12);

  // An unknown tensor is named.
  auto ref = models::huggingface::ReadHfVisionInfo(kTestdata + "clip_vision");
  ASSERT_TRUE(ref.ok());
  auto converted = models::huggingface::ConvertHfVisionStateDict({{"encoder.layers.0.extra.weight", at::zeros({1})}},
                                                                 ref->config);
  ASSERT_FALSE(converted.ok());
  EXPECT_TRUE(absl::StrContains(converted.status().message(), "encoder.layers.0.extra.weight")) << converted.status();
}

}  // namespace
}  // namespace megatron
