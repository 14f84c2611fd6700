// Shared by the pretraining tests: a tiny deterministic JSONL corpus and recipes that train on it.
#pragma once

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/pretrain_gpt.h"
#include "megatron/core/training/recipe.h"

namespace megatron::training::testing {

// An empty directory `name` under the test's temporary directory (removed first if it exists).
inline std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// 400 short "sentences" over a 20-word vocabulary, written to dir/corpus.jsonl.
inline std::string MakeCorpus(const std::string& dir) {
  static const char* kWords[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park", "and",
                                 "ate", "fish", "bird", "sang", "in", "tree", "sun", "was", "warm"};
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/corpus.jsonl";
  std::ofstream out(path);
  std::mt19937 rng(5);
  for (int doc = 0; doc < 400; ++doc) {
    std::string text;
    const int n = 8 + rng() % 30;
    for (int i = 0; i < n; ++i) {
      if (i) text += (rng() % 9 == 0) ? ". " : " ";
      text += kWords[rng() % 20];
    }
    out << "{\"text\": \"" << text << ".\"}\n";
  }
  return path;
}

// `recipe_text` (a PretrainRecipe in text format) pointed at the corpus, tokenizer and dataset under `dir`.
inline proto::PretrainRecipe RecipeOnTinyCorpus(const std::string& dir, const std::string& recipe_text) {
  proto::PretrainRecipe r;
  EXPECT_TRUE(ParseTextProto(recipe_text, "test recipe", &r).ok());
  r.mutable_data()->add_corpus(MakeCorpus(dir));
  r.mutable_data()->set_tokenizer(dir + "/tokenizer.json");
  r.mutable_data()->set_data_prefix(dir + "/corpus_text_document");
  return r;
}

inline PretrainOptions Quiet() {
  PretrainOptions o;
  o.show_progress = false;
  return o;
}

}  // namespace megatron::training::testing
