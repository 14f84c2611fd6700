#include "megatron/core/checkpointing/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ATen/ops/arange.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/scalar_tensor.h>
#include <gtest/gtest.h>

#include "megatron/core/utils/file_io.h"

namespace megatron::checkpointing {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

Checkpoint Example(int64_t iteration) {
  Checkpoint c;
  c.iteration = iteration;
  c.recipe = "name: \"x\"\n";
  c.model["decoder.final_layernorm.weight"] = at::randn({8});
  c.model["embedding.word_embeddings.weight"] = at::randn({5, 8});
  c.optimizer["exp_avg.w"] = at::randn({3});
  c.optimizer["step"] = at::scalar_tensor(iteration, at::kLong);
  c.rng["cpu"] = at::arange(16, at::kByte);
  return c;
}

void ExpectSame(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(t.equal(b.at(name))) << name;
  }
}

void Corrupt(const std::string& path, long offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c;
  f.read(&c, 1);
  c ^= 0x40;
  f.seekp(offset);
  f.write(&c, 1);
}

TEST(Checkpoint, RoundTripIsExactAndLatestMoves) {
  const std::string dir = FreshDir("ckpt_roundtrip");
  ASSERT_EQ(LatestIteration(dir).value(), std::nullopt);
  Checkpoint c3 = Example(3), c7 = Example(7);
  ASSERT_TRUE(SaveCheckpoint(dir, c3).ok());
  ASSERT_TRUE(SaveCheckpoint(dir, c7).ok());
  EXPECT_EQ(LatestIteration(dir).value(), std::optional<int64_t>(7));
  auto loaded = LoadCheckpoint(dir, 7);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->iteration, 7);
  EXPECT_EQ(loaded->recipe, c7.recipe);
  ExpectSame(loaded->model, c7.model);
  ExpectSame(loaded->optimizer, c7.optimizer);
  ExpectSame(loaded->rng, c7.rng);
  auto older = LoadCheckpoint(dir, 3, LoadParts::kModelOnly);
  ASSERT_TRUE(older.ok());
  ExpectSame(older->model, c3.model);
  EXPECT_TRUE(older->optimizer.empty());
  // No temporary directories are left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
  // Re-saving the same iteration replaces it completely.
  Checkpoint again = Example(7);
  ASSERT_TRUE(SaveCheckpoint(dir, again).ok());
  ExpectSame(LoadCheckpoint(dir, 7)->model, again.model);
}

TEST(Checkpoint, AnInterruptedSaveNeverBecomesLatest) {
  const std::string dir = FreshDir("ckpt_crash");
  ASSERT_TRUE(SaveCheckpoint(dir, Example(3)).ok());
  // What a crash in the middle of saving iteration 5 leaves: a temporary directory with a partial file.
  const std::string partial = IterationDirectory(dir, 5) + ".tmp.4242";
  ASSERT_TRUE(utils::MakeDirectories(partial).ok());
  ASSERT_TRUE(utils::WriteFileAtomically(partial + "/model.safetensors", "garbage").ok());
  EXPECT_EQ(LatestIteration(dir).value(), std::optional<int64_t>(3));
  EXPECT_TRUE(LoadCheckpoint(dir, 3).ok());
}

TEST(Checkpoint, CorruptOrTruncatedFilesAreNamed) {
  const std::string dir = FreshDir("ckpt_corrupt");
  ASSERT_TRUE(SaveCheckpoint(dir, Example(2)).ok());
  const std::string model = IterationDirectory(dir, 2) + "/model.safetensors";
  Corrupt(model, static_cast<long>(std::filesystem::file_size(model)) - 3);
  auto loaded = LoadCheckpoint(dir, 2);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find(model), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("CRC"), std::string::npos) << loaded.status();

  const std::string optim = IterationDirectory(dir, 2) + "/optimizer.safetensors";
  std::filesystem::resize_file(optim, std::filesystem::file_size(optim) / 2);
  loaded = LoadCheckpoint(dir, 2, LoadParts::kAll);
  ASSERT_FALSE(loaded.ok());

  ASSERT_TRUE(SaveCheckpoint(dir, Example(4)).ok());
  std::filesystem::resize_file(IterationDirectory(dir, 4) + "/optimizer.safetensors", 10);
  loaded = LoadCheckpoint(dir, 4);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("optimizer.safetensors"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("truncated"), std::string::npos) << loaded.status();
}

TEST(Checkpoint, MalformedTrackerAndMetadataAreErrors) {
  const std::string dir = FreshDir("ckpt_tracker");
  ASSERT_TRUE(SaveCheckpoint(dir, Example(1)).ok());
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/latest_checkpointed_iteration.txt", "release\n").ok());
  auto latest = LatestIteration(dir);
  ASSERT_FALSE(latest.ok());
  EXPECT_NE(latest.status().message().find("latest_checkpointed_iteration.txt"), std::string::npos);

  const std::string metadata = IterationDirectory(dir, 1) + "/metadata.json";
  ASSERT_TRUE(utils::WriteFileAtomically(metadata, "{\"format_version\": 1, \"iteration\": 1}").ok());
  auto loaded = LoadCheckpoint(dir, 1);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("metadata.json"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("recipe"), std::string::npos) << loaded.status();
  ASSERT_TRUE(utils::WriteFileAtomically(metadata, "{\"format_ver").ok());
  EXPECT_FALSE(LoadCheckpoint(dir, 1).ok());
}

}  // namespace
}  // namespace megatron::checkpointing
