#include <dirent.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/recipe.h"

TEST(Recipes, EveryRecipeParses) {
  const std::string dir = "experiments/t5/recipes";
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  int count = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 10 || name.substr(name.size() - 10) != ".textproto") continue;
    megatron::proto::PretrainRecipe recipe;
    absl::Status s = megatron::training::LoadTextProto(dir + "/" + name, &recipe);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_GT(recipe.training().train_iters(), 0) << name;
    ++count;
  }
  closedir(d);
  EXPECT_GE(count, 1);
}
