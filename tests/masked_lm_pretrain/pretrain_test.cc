// BERT and T5 pretraining end to end on a tiny generated corpus: data preparation (tokenizer, sentence-level
// indexed dataset), a few dozen iterations whose training and validation losses fall, resume from the
// checkpoint, and bad input.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/pretrain_masked_lm.h"
#include "megatron/core/training/recipe.h"

namespace megatron::training {
namespace {

// 300 JSONL documents of 2-5 sentences over a 16-word vocabulary with a little structure (subject verb object)
// for the models to learn.
std::string MakeCorpus(const std::string& dir) {
  static const char* kSubjects[] = {"the cat", "a dog", "the bird", "my friend"};
  static const char* kVerbs[] = {"sat on", "ran to", "looked at", "sang in"};
  static const char* kObjects[] = {"the mat", "the park", "a tree", "the sun"};
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/corpus.jsonl";
  std::ofstream out(path);
  std::mt19937 rng(11);
  for (int doc = 0; doc < 300; ++doc) {
    std::string text;
    const int n = 2 + rng() % 4;
    for (int i = 0; i < n; ++i) {
      if (i) text += " ";
      text += std::string(kSubjects[rng() % 4]) + " " + kVerbs[rng() % 4] + " " + kObjects[rng() % 4] + ".";
    }
    out << "{\"text\": \"" << text << "\"}\n";
  }
  return path;
}

proto::PretrainRecipe Recipe(const std::string& dir) {
  proto::PretrainRecipe r;
  EXPECT_TRUE(ParseTextProto(R"(
    name: "tiny"
    model { num_layers: 2 hidden_size: 32 num_attention_heads: 2 ffn_hidden_size: 64 max_position_embeddings: 32
            hidden_dropout: 0 attention_dropout: 0 }
    data { tokenizer_vocab_size: 300 split: "90,10,0" seq_length: 32 }
    training { micro_batch_size: 8 global_batch_size: 16 train_iters: 40 eval_interval: 20 eval_iters: 2
               num_threads: 1 }
    optimizer { lr: 3e-3 min_lr: 3e-4 lr_warmup_iters: 5 clip_grad: 1.0 weight_decay: 0.01 }
  )", "test recipe", &r).ok());
  r.mutable_data()->add_corpus(MakeCorpus(dir));
  r.mutable_data()->set_tokenizer(dir + "/tokenizer.json");
  r.mutable_data()->set_data_prefix(dir + "/sentences");
  return r;
}

MaskedLmOptions Quiet() {
  MaskedLmOptions o;
  o.show_progress = false;
  return o;
}

double Mean(const std::vector<double>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + from, v.begin() + to, 0.0) / static_cast<double>(to - from);
}

class MaskedLmPretrain : public ::testing::TestWithParam<MaskedLmFamily> {};

TEST_P(MaskedLmPretrain, LossFallsAndResumeContinues) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/run" + std::to_string(static_cast<int>(GetParam()));
  proto::PretrainRecipe recipe = Recipe(dir);
  recipe.mutable_checkpoint()->set_save(dir + "/checkpoints");
  recipe.mutable_training()->set_exit_after_iters(30);
  auto first = PretrainMaskedLm(GetParam(), recipe, Quiet());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->train_losses.size(), 30u);
  EXPECT_LT(Mean(first->train_losses, 25, 30), Mean(first->train_losses, 0, 5) - 0.5);
  ASSERT_GE(first->valid_losses.size(), 2u);
  EXPECT_LT(first->valid_losses.back().second, first->valid_losses.front().second - 0.5);
  // The second call resumes at iteration 30 from the checkpoint and runs the remaining 10.
  recipe.mutable_training()->set_exit_after_iters(0);
  auto second = PretrainMaskedLm(GetParam(), recipe, Quiet());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->start_iteration, 30);
  EXPECT_EQ(second->final_iteration, 40);
  EXPECT_LT(Mean(second->train_losses, 5, 10), Mean(first->train_losses, 0, 5) - 0.5);
}

INSTANTIATE_TEST_SUITE_P(Families, MaskedLmPretrain, ::testing::Values(MaskedLmFamily::kBert, MaskedLmFamily::kT5),
                         [](const auto& info) { return info.param == MaskedLmFamily::kBert ? "Bert" : "T5"; });

TEST(MaskedLmPretrainBadInput, BatchSizesAndSeqLength) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/bad";
  proto::PretrainRecipe recipe = Recipe(dir);
  recipe.mutable_training()->set_global_batch_size(12);
  auto r = PretrainMaskedLm(MaskedLmFamily::kBert, recipe, Quiet());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("training.global_batch_size"), std::string::npos) << r.status();
  recipe = Recipe(dir);
  recipe.mutable_data()->set_seq_length(64);
  r = PretrainMaskedLm(MaskedLmFamily::kT5, recipe, Quiet());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("data.seq_length"), std::string::npos) << r.status();
}

TEST(SplitSentences, LinesAndSentenceEnds) {
  EXPECT_EQ(SplitSentences("One two. Three? Four!\n  five six\n\nseven. "),
            (std::vector<std::string>{"One two.", "Three?", "Four!", "five six", "seven."}));
  EXPECT_EQ(SplitSentences("3.14 is pi"), (std::vector<std::string>{"3.14 is pi"}));
  EXPECT_TRUE(SplitSentences(" \n ").empty());
}

}  // namespace
}  // namespace megatron::training
