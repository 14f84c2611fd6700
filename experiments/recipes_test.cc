#include <dirent.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/recipe.h"

// Every PretrainRecipe under `dir` parses and trains for at least one iteration; returns how many there were.
int CheckRecipesIn(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  EXPECT_NE(d, nullptr) << dir;
  if (d == nullptr) return 0;
  int count = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 10 || name.substr(name.size() - 10) != ".textproto") continue;
    megatron::proto::PretrainRecipe recipe;
    absl::Status s = megatron::training::LoadTextProto(dir + "/" + name, &recipe);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_GT(recipe.training().train_iters(), 0) << dir << "/" << name;
    ++count;
  }
  closedir(d);
  return count;
}

TEST(Recipes, EveryRecipeParses) {
  for (const char* dir : {"experiments/gpt/recipes", "experiments/bert/recipes", "experiments/t5/recipes"}) {
    EXPECT_GE(CheckRecipesIn(dir), 1) << dir;
  }
}
