// tools:combine_checkpoints end to end: a GPT checkpoint and a vision-encoder checkpoint (ours, and a HuggingFace
// CLIP directory) built here combine into one LLaVA checkpoint; LLaVA starts from it with the language model and
// vision weights exactly the inputs and the projector freshly initialised; pretrain trains from it; malformed
// inputs give one clear error each.
#include <filesystem>
#include <fstream>
#include <string>

#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_vision.h"
#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/proto/llava.pb.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/llava.h"
#include "megatron/core/training/llava_combine.h"
#include "megatron/core/training/recipe.h"

namespace megatron::training {
namespace {

using StateDict = std::map<std::string, at::Tensor>;

std::string TestDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// The shipped pretrain recipe, small: what the combined checkpoint must fit.
proto::LlavaRecipe SmallRecipe(const std::string& dir) {
  proto::LlavaRecipe r;
  EXPECT_TRUE(LoadTextProto("experiments/llava/recipes/shapes_pretrain.textproto", &r).ok());
  r.mutable_model()->mutable_language_model()->set_num_layers(2);
  r.mutable_model()->mutable_language_model()->set_hidden_size(64);
  r.mutable_model()->mutable_language_model()->set_ffn_hidden_size(128);
  r.mutable_model()->mutable_projector()->set_ffn_hidden_size(64);
  r.mutable_data()->set_dir(dir + "/data");
  r.mutable_data()->set_synthetic_train_samples(120);
  r.mutable_data()->set_synthetic_valid_samples(30);
  r.mutable_training()->set_micro_batch_size(4);
  r.mutable_training()->set_global_batch_size(4);
  r.mutable_training()->set_train_iters(2);
  r.mutable_training()->set_eval_iters(0);
  r.mutable_training()->set_num_threads(1);
  r.clear_tensorboard_dir();
  r.clear_checkpoint();
  return r;
}

void Save(const std::string& dir, int64_t iteration, const StateDict& model) {
  checkpointing::Checkpoint c;
  c.iteration = iteration;
  c.model = model;
  ASSERT_TRUE(checkpointing::SaveCheckpoint(dir, c).ok()) << dir;
}

void ExpectEqualTensors(const StateDict& expected, const StateDict& actual, const std::string& prefix) {
  int compared = 0;
  for (const auto& [name, tensor] : expected) {
    auto it = actual.find(prefix + name);
    ASSERT_NE(it, actual.end()) << prefix << name;
    EXPECT_TRUE(at::equal(tensor, it->second.cpu())) << prefix << name;
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

StateDict WithPrefix(const StateDict& state, const std::string& prefix) {
  StateDict out;
  for (const auto& [name, tensor] : state) {
    if (name.rfind(prefix, 0) == 0) out.emplace(name.substr(prefix.size()), tensor);
  }
  return out;
}

class CombineCheckpoints : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir("combine_checkpoints");
    recipe_ = SmallRecipe(dir_);
    run_.show_progress = false;
    // The recipe's own model (seed = training.seed): its projector is what "freshly initialised" means.
    auto data = LlavaData::Prepare(recipe_, run_.base_dir, false);
    ASSERT_TRUE(data.ok()) << data.status();
    auto fresh = BuildLlavaModel(recipe_, **data, false);
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    fresh_ = (*fresh)->StateDict();
    config_ = (*fresh)->config();
    // The inputs: a GPT language model and a CLIP ViT of the recipe's shapes, other weights (another seed).
    tensor_parallel::ManualSeed(777);
    auto gpt = models::GPTModel::Create(config_.language);
    ASSERT_TRUE(gpt.ok()) << gpt.status();
    auto vit = models::vision::CLIPViTModel::Create(config_.vision);
    ASSERT_TRUE(vit.ok()) << vit.status();
    lm_ = (*gpt)->StateDict();
    vision_ = (*vit)->StateDict();
    Save(dir_ + "/gpt", 250, lm_);
    Save(dir_ + "/vit", 40, vision_);
    ASSERT_TRUE(models::huggingface::SaveHfVisionModel(**vit, dir_ + "/hf_clip").ok());
  }

  absl::StatusOr<CombineCheckpointsResult> Combine(const std::string& lm, const std::string& vision,
                                                   const std::string& output) {
    return CombineLlavaCheckpoints(recipe_, {lm, vision, output}, run_);
  }

  std::string dir_;
  proto::LlavaRecipe recipe_;
  LlavaRunOptions run_;
  models::multimodal::LlavaConfig config_;
  StateDict fresh_, lm_, vision_;
};

TEST_F(CombineCheckpoints, LlavaStartsFromTheInputsWithAFreshProjector) {
  for (const std::string vision : {"vit", "hf_clip"}) {
    SCOPED_TRACE(vision);
    const std::string out = dir_ + "/combined_" + vision;
    auto result = Combine(dir_ + "/gpt", dir_ + "/" + vision, out);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->language_model_tensors, static_cast<int64_t>(lm_.size()));
    EXPECT_EQ(result->vision_model_tensors, static_cast<int64_t>(vision_.size()));

    // The file: the inputs under their prefixes, nothing else (no projector), iteration 1 as Megatron's script.
    auto latest = checkpointing::LatestIteration(out);
    ASSERT_TRUE(latest.ok() && latest->has_value());
    EXPECT_EQ(**latest, 1);
    auto ckpt = checkpointing::LoadCheckpoint(out, 1, checkpointing::LoadParts::kModelOnly);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ(ckpt->model.size(), lm_.size() + vision_.size());
    ExpectEqualTensors(lm_, ckpt->model, "language_model.");
    ExpectEqualTensors(vision_, ckpt->model, "vision_model.");

    // LLaVA loads it: language model and vision weights are the inputs bit for bit, the projector the fresh one.
    proto::LlavaRecipe load = recipe_;
    load.mutable_checkpoint()->set_load(out);
    load.mutable_model()->set_allow_missing_vision_projection_checkpoint(true);
    auto loaded = LoadLlava(load, run_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const StateDict state = loaded->model->StateDict();
    ExpectEqualTensors(lm_, state, "language_model.");
    ExpectEqualTensors(vision_, state, "vision_model.");
    ExpectEqualTensors(WithPrefix(fresh_, "vision_projection."), state, "vision_projection.");
    // (the inputs differ from a fresh build, so the equalities above are not vacuous)
    EXPECT_FALSE(at::equal(fresh_.at("language_model.embedding.word_embeddings.weight"),
                           state.at("language_model.embedding.word_embeddings.weight")));
    EXPECT_FALSE(at::equal(fresh_.at("vision_model.conv1.weight"), state.at("vision_model.conv1.weight")));

    // Without Megatron's allow_missing_vision_projection_checkpoint the missing projector is an error.
    load.mutable_model()->set_allow_missing_vision_projection_checkpoint(false);
    auto strict = LoadLlava(load, run_);
    ASSERT_FALSE(strict.ok());
    EXPECT_NE(strict.status().message().find("missing: vision_projection."), std::string::npos) << strict.status();
  }

  // pretrain starts from it (weights only) and trains the projector; the frozen towers stay the inputs.
  proto::LlavaRecipe pretrain = recipe_;
  pretrain.mutable_checkpoint()->set_load(dir_ + "/combined_vit");
  pretrain.mutable_checkpoint()->set_finetune(true);
  pretrain.mutable_checkpoint()->set_save(dir_ + "/pretrain");
  pretrain.mutable_model()->set_allow_missing_vision_projection_checkpoint(true);
  pretrain.mutable_model()->set_freeze_language_model(true);
  pretrain.mutable_model()->set_freeze_vision_model(true);
  auto trained = TrainLlava(pretrain, run_);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->final_iteration, 2);
  auto after = checkpointing::LoadCheckpoint(dir_ + "/pretrain", 2, checkpointing::LoadParts::kModelOnly);
  ASSERT_TRUE(after.ok()) << after.status();
  ExpectEqualTensors(lm_, after->model, "language_model.");
  ExpectEqualTensors(vision_, after->model, "vision_model.");
  EXPECT_FALSE(at::equal(fresh_.at("vision_projection.encoder.linear_fc1.weight"),
                         after->model.at("vision_projection.encoder.linear_fc1.weight")));
}

// A language model saved by a tensor-parallel run (checkpoint format 2: pieces with global offsets, as two TP ranks
// write them: every 2-D weight in two row halves) combines like a whole one: the output holds whole tensors.
TEST_F(CombineCheckpoints, TensorParallelShardsOfTheLanguageModelAreAssembled) {
  checkpointing::RankState state;
  int split = 0;
  for (const auto& [name, tensor] : lm_) {
    const std::vector<int64_t> shape = tensor.sizes().vec();
    if (tensor.dim() == 2 && tensor.size(0) % 2 == 0) {
      const int64_t half = tensor.size(0) / 2;
      for (int64_t r = 0; r < 2; ++r) {
        state.model.push_back({name, shape, {r * half, 0}, tensor.narrow(0, r * half, half).contiguous()});
      }
      ++split;
    } else {
      state.model.push_back({name, shape, std::vector<int64_t>(tensor.dim(), 0), tensor});
    }
  }
  ASSERT_GT(split, 4);
  checkpointing::SavedLayout layout;
  layout.tp = 2;
  ASSERT_TRUE(checkpointing::SaveShardedCheckpoint(dir_ + "/gpt_tp2", 250, "", layout, {}, state, nullptr).ok());

  const std::string out = dir_ + "/combined_tp2";
  auto result = Combine(dir_ + "/gpt_tp2", dir_ + "/vit", out);
  ASSERT_TRUE(result.ok()) << result.status();
  auto ckpt = checkpointing::LoadCheckpoint(out, 1, checkpointing::LoadParts::kModelOnly);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->model.size(), lm_.size() + vision_.size());
  ExpectEqualTensors(lm_, ckpt->model, "language_model.");
  ExpectEqualTensors(vision_, ckpt->model, "vision_model.");
}

TEST_F(CombineCheckpoints, MalformedInputsGiveOneClearError) {
  auto error = [&](const std::string& lm, const std::string& vision, const std::string& out = "") {
    auto r = Combine(lm, vision, out.empty() ? dir_ + "/never" : out);
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/never")) << "written despite the error";
    return std::string(r.status().message());
  };
  const std::string gpt = dir_ + "/gpt", vit = dir_ + "/vit";

  EXPECT_NE(error(dir_ + "/nothing", vit).find("--language_model: " + dir_ + "/nothing is not a directory"),
            std::string::npos);
  std::filesystem::create_directories(dir_ + "/empty");
  EXPECT_NE(error(gpt, dir_ + "/empty").find("--vision_model: no checkpoint in"), std::string::npos);

  // Wrong families.
  Save(dir_ + "/bert", 1, {{"encoder.layers.0.mlp.linear_fc1.weight", at::zeros({4, 4})},
                           {"embedding.word_embeddings.weight", at::zeros({4, 4})}});
  EXPECT_NE(error(dir_ + "/bert", vit).find("is a BERT or T5 checkpoint"), std::string::npos);
  StateDict legacy;
  for (const auto& [name, tensor] : lm_) legacy.emplace("language_model." + name, tensor);
  Save(dir_ + "/legacy", 1, legacy);
  EXPECT_NE(error(dir_ + "/legacy", vit).find("convert_checkpoint"), std::string::npos);
  EXPECT_NE(error(gpt, gpt).find("is not a vision encoder checkpoint (no conv1.weight and position_embeddings.weight)"
                                 " (it is a GPT language model)"),
            std::string::npos);

  // Shapes against the recipe's model, naming the tensor.
  StateDict narrow = lm_;
  narrow["decoder.layers.1.mlp.linear_fc2.weight"] = at::zeros({64, 100});
  Save(dir_ + "/gpt_narrow", 1, narrow);
  EXPECT_NE(error(dir_ + "/gpt_narrow", vit).find("tensor 'decoder.layers.1.mlp.linear_fc2.weight' has shape [64, 100]"
                                                  " but the recipe's model has language_model.decoder.layers.1.mlp."
                                                  "linear_fc2.weight [64, 128]"),
            std::string::npos);
  StateDict deeper = lm_;
  deeper["decoder.layers.2.mlp.linear_fc2.weight"] = at::zeros({64, 128});
  Save(dir_ + "/gpt_deeper", 1, deeper);
  EXPECT_NE(error(dir_ + "/gpt_deeper", vit).find("'decoder.layers.2.mlp.linear_fc2.weight' has no counterpart"),
            std::string::npos);
  StateDict shallow = vision_;
  shallow.erase("decoder.layers.1.mlp.linear_fc1.weight");
  Save(dir_ + "/vit_shallow", 1, shallow);
  EXPECT_NE(error(gpt, dir_ + "/vit_shallow").find("tensor 'decoder.layers.1.mlp.linear_fc1.weight' (vision_model."
                                                   "decoder.layers.1.mlp.linear_fc1.weight of the recipe's model) is "
                                                   "missing"),
            std::string::npos);

  // A HuggingFace encoder of another shape: the config field is named.
  models::vision::VisionConfig other = config_.vision;
  other.patch_dim = 16;
  auto vit16 = models::vision::CLIPViTModel::Create(other);
  ASSERT_TRUE(vit16.ok());
  ASSERT_TRUE(models::huggingface::SaveHfVisionModel(**vit16, dir_ + "/hf_patch16").ok());
  EXPECT_NE(error(gpt, dir_ + "/hf_patch16").find("config.json gives model.vision_model.patch_dim = 16 but the recipe "
                                                  "has 8"),
            std::string::npos);

  // Megatron's tensor-parallel shards.
  std::filesystem::create_directories(dir_ + "/megatron_tp/iter_0000001/mp_rank_00");
  std::ofstream(dir_ + "/megatron_tp/latest_checkpointed_iteration.txt") << "1\n";
  EXPECT_NE(error(dir_ + "/megatron_tp", vit).find("tensor-parallel sharded"), std::string::npos);

  // The output must be new.
  EXPECT_NE(error(gpt, vit, gpt).find("--output: " + gpt + " already holds a checkpoint"), std::string::npos);
}

}  // namespace
}  // namespace megatron::training
