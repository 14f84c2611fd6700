#include "megatron/core/training/recipe.h"

#include <gtest/gtest.h>

#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::training {
namespace {

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  EXPECT_TRUE(utils::WriteFileAtomically(path, text).ok());
  return path;
}

TEST(Recipe, ParsesAndKeepsDefaults) {
  proto::PretrainRecipe r;
  ASSERT_TRUE(LoadTextProto(Write("ok.textproto", "name: \"x\"\nmodel { num_layers: 3 normalization: RMSNORM }\n"),
                            &r).ok());
  EXPECT_EQ(r.model().num_layers(), 3);
  EXPECT_EQ(r.model().normalization(), proto::RMSNORM);
  EXPECT_EQ(r.model().hidden_size(), 64);  // proto default
}

TEST(Recipe, UnknownFieldNamesFileLineAndField) {
  proto::PretrainRecipe r;
  const std::string path = Write("bad.textproto", "name: \"x\"\nmodel {\n  num_layer: 3\n}\n");
  absl::Status s = LoadTextProto(path, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path + ":3:"), std::string::npos) << s;
  EXPECT_NE(s.message().find("num_layer"), std::string::npos) << s;
}

TEST(Recipe, MalformedValueAndMissingFile) {
  proto::PretrainRecipe r;
  const std::string path = Write("bad_value.textproto", "training { train_iters: \"many\" }\n");
  absl::Status s = LoadTextProto(path, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path + ":1:"), std::string::npos) << s;
  s = LoadTextProto(::testing::TempDir() + "/does_not_exist.textproto", &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("does_not_exist.textproto"), std::string::npos) << s;
}

TEST(Recipe, OverridesEveryKindOfField) {
  proto::PretrainRecipe r;
  ASSERT_TRUE(ApplyOverride("model.hidden_size", "96", &r).ok());
  ASSERT_TRUE(ApplyOverride("optimizer.lr", "1e-3", &r).ok());
  ASSERT_TRUE(ApplyOverride("model.activation", "SWIGLU", &r).ok());
  ASSERT_TRUE(ApplyOverride("model.share_embeddings_and_output_weights", "false", &r).ok());
  ASSERT_TRUE(ApplyOverride("name", "has \"quotes\" and spaces", &r).ok());
  ASSERT_TRUE(ApplyOverride("data.corpus", "a.txt,b.jsonl", &r).ok());
  EXPECT_EQ(r.model().hidden_size(), 96);
  EXPECT_FLOAT_EQ(r.optimizer().lr(), 1e-3f);
  EXPECT_EQ(r.model().activation(), proto::SWIGLU);
  EXPECT_FALSE(r.model().share_embeddings_and_output_weights());
  EXPECT_EQ(r.name(), "has \"quotes\" and spaces");
  ASSERT_EQ(r.data().corpus_size(), 2);
  EXPECT_EQ(r.data().corpus(1), "b.jsonl");
  ASSERT_TRUE(ApplyOverride("data.corpus", "c.txt", &r).ok());  // replaces, does not append
  EXPECT_EQ(r.data().corpus_size(), 1);
}

TEST(Recipe, BadOverridesNameTheFlag) {
  proto::PretrainRecipe r;
  absl::Status s = ApplyOverride("model.num_layer", "4", &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--model.num_layer=4"), std::string::npos) << s;
  EXPECT_NE(s.message().find("megatron.proto.ModelConfig"), std::string::npos) << s;
  s = ApplyOverride("model.hidden_size", "big", &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--model.hidden_size=big"), std::string::npos) << s;
  s = ApplyOverride("model.activation", "SWISH", &r);
  ASSERT_FALSE(s.ok());
  s = ApplyOverride("model", "3", &r);
  ASSERT_FALSE(s.ok());
}

TEST(Recipe, CommandLineSplitsRecipeOverridesAndReserved) {
  const char* argv[] = {"bin", "--recipe=r.textproto", "--model.num_layers=2", "--load=ckpt", "--sample.greedy"};
  auto cl = ParseCommandLine(5, const_cast<char**>(argv), {"load"});
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->recipe, "r.textproto");
  ASSERT_EQ(cl->overrides.size(), 2u);
  EXPECT_EQ(cl->overrides[1].second, "true");
  ASSERT_EQ(cl->reserved.size(), 1u);
  const char* bad[] = {"bin", "positional"};
  EXPECT_FALSE(ParseCommandLine(2, const_cast<char**>(bad)).ok());
}

}  // namespace
}  // namespace megatron::training
