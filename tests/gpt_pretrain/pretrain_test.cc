// End-to-end tests of GPT pretraining on a tiny synthetic corpus: resuming from a checkpoint reproduces the
// uninterrupted run exactly (dropout on, gradient accumulation on), and bad input fails with one clear error
// that names the file or field without touching existing checkpoints.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/pretrain_gpt.h"
#include "megatron/core/training/recipe.h"
#include "tests/gpt_pretrain/tiny_corpus.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::training {
namespace {

using testing::FreshDir;
using testing::Quiet;

namespace fs = std::filesystem;

proto::PretrainRecipe TinyRecipe(const std::string& dir) {
  const std::string text = R"pb(
    name: "tiny"
    model { num_layers: 2 hidden_size: 32 num_attention_heads: 4 num_query_groups: 2 ffn_hidden_size: 64
            max_position_embeddings: 32 hidden_dropout: 0.1 attention_dropout: 0.1 make_vocab_size_divisible_by: 8 }
    data { format: "jsonl" tokenizer_vocab_size: 300 seq_length: 16 split: "90,10,0" }
    training { micro_batch_size: 4 global_batch_size: 8 train_iters: 12 eval_interval: 4 eval_iters: 2
               num_threads: 1 }
    optimizer { lr: 1e-2 min_lr: 1e-3 lr_warmup_iters: 2 }
    sample { max_new_tokens: 0 }
  )pb";
  return testing::RecipeOnTinyCorpus(dir, text);
}

TEST(Pretrain, ResumeReproducesTheUninterruptedRunExactly) {
  const std::string dir = FreshDir("resume");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_checkpoint()->set_save(dir + "/full");
  auto full = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->train_losses.size(), 12u);

  recipe.mutable_checkpoint()->set_save(dir + "/split");
  recipe.mutable_training()->set_exit_after_iters(5);  // stops (and saves) mid-run, between evaluations
  auto first = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->final_iteration, 5);
  recipe.mutable_training()->set_exit_after_iters(0);
  auto second = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->start_iteration, 5);
  ASSERT_EQ(second->train_losses.size(), 7u);

  for (int i = 0; i < 5; ++i) EXPECT_EQ(first->train_losses[i], full->train_losses[i]) << "iteration " << i + 1;
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(second->train_losses[i], full->train_losses[5 + i]) << "iteration " << 6 + i;
  }
  // The final weights are bit-identical too.
  auto a = checkpointing::LoadCheckpoint(dir + "/full", 12, checkpointing::LoadParts::kAll);
  auto b = checkpointing::LoadCheckpoint(dir + "/split", 12, checkpointing::LoadParts::kAll);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [name, t] : a->model) EXPECT_TRUE(t.equal(b->model.at(name))) << name;
  for (const auto& [name, t] : a->optimizer) EXPECT_TRUE(t.equal(b->optimizer.at(name))) << name;
  // Training lowered the validation loss (a sanity check that the run learned something).
  EXPECT_LT(full->valid_losses.back().second, full->valid_losses.front().second * 0.8);
}

TEST(Pretrain, CorruptCheckpointIsNamedAndNothingIsOverwritten) {
  const std::string dir = FreshDir("corrupt");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_checkpoint()->set_save(dir + "/ckpt");
  recipe.mutable_training()->set_train_iters(3);
  ASSERT_TRUE(PretrainGpt(recipe, Quiet()).ok());
  const std::string model = checkpointing::IterationDirectory(dir + "/ckpt", 3) + "/model.safetensors";
  fs::resize_file(model, fs::file_size(model) - 7);
  const auto before = fs::last_write_time(model);
  recipe.mutable_training()->set_train_iters(6);
  auto result = PretrainGpt(recipe, Quiet());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(model), std::string::npos) << result.status();
  EXPECT_EQ(fs::last_write_time(model), before);
  EXPECT_FALSE(fs::exists(checkpointing::IterationDirectory(dir + "/ckpt", 6)));
  EXPECT_EQ(checkpointing::LatestIteration(dir + "/ckpt").value(), std::optional<int64_t>(3));
}

TEST(Pretrain, TruncatedDatasetIsNamed) {
  const std::string dir = FreshDir("truncated");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_training()->set_train_iters(1);
  ASSERT_TRUE(PretrainGpt(recipe, Quiet()).ok());
  const std::string bin = dir + "/corpus_text_document.bin";
  fs::resize_file(bin, fs::file_size(bin) / 2);
  auto result = PretrainGpt(recipe, Quiet());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(bin), std::string::npos) << result.status();
}

TEST(Pretrain, ImpossibleSettingsNameTheField) {
  const std::string dir = FreshDir("bad_settings");
  const std::vector<std::pair<std::pair<std::string, std::string>, std::string>> cases = {
      {{"model.num_attention_heads", "3"}, "model.num_attention_heads"},
      {{"model.num_query_groups", "3"}, "model.num_query_groups"},
      {{"training.global_batch_size", "6"}, "training.global_batch_size"},
      {{"data.seq_length", "64"}, "data.seq_length"},
      {{"data.format", "csv"}, "data.format"},
      {{"training.device", "tpu"}, "training.device"},
      {{"data.split", "0,0,1"}, "data.split"},
      {{"model.backend", "FUSED"}, "model.backend"},
      // The tiny HF Llama has 101 ids, fewer than the 300-id tokenizer: refused before training.
      {{"load_hf", "tests/hf_parity/testdata/llama"}, "load_hf"},
      {{"load_hf", "tests/hf_parity/testdata/missing"}, "tests/hf_parity/testdata/missing/config.json"},
  };
  for (const auto& [override, field] : cases) {
    proto::PretrainRecipe recipe = TinyRecipe(dir);
    ASSERT_TRUE(ApplyOverride(override.first, override.second, &recipe).ok()) << override.first;
    auto result = PretrainGpt(recipe, Quiet());
    ASSERT_FALSE(result.ok()) << override.first;
    EXPECT_NE(result.status().message().find(field), std::string::npos)
        << override.first << " -> " << result.status();
  }
}

TEST(Pretrain, Bf16AutocastTracksFp32) {
  const std::string dir = FreshDir("bf16");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_training()->set_train_iters(4);
  recipe.mutable_model()->set_hidden_dropout(0);
  recipe.mutable_model()->set_attention_dropout(0);
  auto fp32 = PretrainGpt(recipe, Quiet());
  recipe.mutable_training()->set_precision(proto::BF16);
  auto bf16 = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(fp32.ok() && bf16.ok());
  for (size_t i = 0; i < fp32->train_losses.size(); ++i) {
    // bf16 keeps 8 mantissa bits: the losses agree to about 1%, and are not identical.
    EXPECT_NEAR(bf16->train_losses[i], fp32->train_losses[i], 0.02 * fp32->train_losses[i]) << i;
  }
  EXPECT_NE(bf16->train_losses[0], fp32->train_losses[0]);
}

// optimizer.fused (multi-tensor AdamW; on CPU its float64 reference) trains like the per-tensor optimizer: the same
// update, so float32 losses agree to rounding, and the override reaches the trainer.
TEST(Pretrain, FusedOptimizerTracksPerTensorOptimizer) {
  const std::string dir = FreshDir("fused_adam");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_training()->set_train_iters(6);
  recipe.mutable_model()->set_hidden_dropout(0);
  recipe.mutable_model()->set_attention_dropout(0);
  auto loop = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(ApplyOverride("optimizer.fused", "true", &recipe).ok());
  auto fused = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(loop.ok() && fused.ok());
  ASSERT_EQ(loop->train_losses.size(), fused->train_losses.size());
  for (size_t i = 0; i < loop->train_losses.size(); ++i) {
    EXPECT_NEAR(fused->train_losses[i], loop->train_losses[i], 1e-4 * loop->train_losses[i]) << i;
  }
}

// training.profile_step_start/end: the window runs under the profiler, each rank writes a Chrome trace and the
// table of time per operator (host operators on CPU), and the run's losses are unchanged by profiling.
TEST(Pretrain, ProfileWindowWritesATraceAndATable) {
  const std::string dir = FreshDir("profile");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_training()->set_train_iters(4);
  recipe.mutable_training()->set_eval_iters(0);
  auto plain = PretrainGpt(recipe, Quiet());
  recipe.mutable_training()->set_profile_step_start(1);
  recipe.mutable_training()->set_profile_step_end(3);
  recipe.mutable_training()->set_profile_dir(dir + "/profile");
  auto profiled = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(plain.ok() && profiled.ok()) << profiled.status();
  EXPECT_EQ(plain->train_losses, profiled->train_losses);
  ASSERT_TRUE(fs::exists(dir + "/profile/trace_rank0.json"));
  std::ifstream table(dir + "/profile/kernels_rank0.txt");
  std::stringstream text;
  text << table.rdbuf();
  EXPECT_NE(text.str().find("aten::mm"), std::string::npos) << text.str();
  recipe.mutable_training()->set_profile_step_start(-1);
  auto bad = PretrainGpt(recipe, Quiet());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("training.profile_step_start"), std::string::npos);
}

}  // namespace
}  // namespace megatron::training
