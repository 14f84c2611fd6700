#include "megatron/core/checkpointing/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ATen/ops/arange.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/scalar_tensor.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/utils/crc32c.h"
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

// A checkpoint as format version 1 wrote it: three whole-tensor files and metadata without a tensor index.
void WriteVersion1(const std::string& dir, const Checkpoint& c) {
  const std::string iter_dir = IterationDirectory(dir, c.iteration);
  ASSERT_TRUE(utils::MakeDirectories(iter_dir).ok());
  nlohmann::json files = nlohmann::json::object();
  const std::pair<const char*, const std::map<std::string, at::Tensor>*> parts[] = {
      {"model", &c.model}, {"optimizer", &c.optimizer}, {"rng", &c.rng}};
  for (const auto& [part, tensors] : parts) {
    const std::string name = std::string(part) + ".safetensors";
    ASSERT_TRUE(SaveSafetensors(iter_dir + "/" + name, *tensors).ok());
    const std::string bytes = utils::ReadFile(iter_dir + "/" + name).value();
    files[name] = {{"bytes", bytes.size()}, {"crc32c", utils::Crc32c(bytes)}};
  }
  const nlohmann::json metadata = {
      {"format_version", 1}, {"iteration", c.iteration}, {"recipe", c.recipe}, {"files", files}};
  ASSERT_TRUE(utils::WriteFileAtomically(iter_dir + "/metadata.json", metadata.dump(2)).ok());
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/latest_checkpointed_iteration.txt", "5\n").ok());
}

TEST(Checkpoint, Version1CheckpointsStillLoad) {
  const std::string dir = FreshDir("ckpt_v1");
  const Checkpoint c = Example(5);
  WriteVersion1(dir, c);
  auto loaded = LoadCheckpoint(dir, 5);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSame(loaded->model, c.model);
  ExpectSame(loaded->optimizer, c.optimizer);
  ExpectSame(loaded->rng, c.rng);
  auto reader = CheckpointReader::Open(dir, 5);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader->format_version(), 1);
  auto box = reader->Read(Part::kModel, "embedding.word_embeddings.weight", {1, 2}, {3, 4});
  ASSERT_TRUE(box.ok()) << box.status();
  EXPECT_TRUE(box->equal(c.model.at("embedding.word_embeddings.weight").narrow(0, 1, 3).narrow(1, 2, 4)));
}

TEST(Checkpoint, PiecesAssembleIntoAnyBox) {
  const std::string dir = FreshDir("ckpt_pieces");
  const at::Tensor w = at::randn({6, 10});
  // Three pieces tiling w: rows [0, 4) x columns [0, 3) and [3, 10), and rows [4, 6) whole.
  RankState state;
  state.model.push_back({"w", {6, 10}, {0, 0}, w.narrow(0, 0, 4).narrow(1, 0, 3)});
  state.model.push_back({"w", {6, 10}, {0, 3}, w.narrow(0, 0, 4).narrow(1, 3, 7)});
  state.model.push_back({"w", {6, 10}, {4, 0}, w.narrow(0, 4, 2)});
  state.optimizer.push_back({"step", {}, {}, at::scalar_tensor(3, at::kLong)});
  SavedLayout layout;
  layout.tp = 2;
  layout.dp = 3;
  ASSERT_TRUE(SaveShardedCheckpoint(dir, 3, "r", layout, RankPlace{}, state, nullptr).ok());
  auto reader = CheckpointReader::Open(dir, 3);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->format_version(), kCheckpointFormatVersion);
  EXPECT_EQ(reader->layout().tp, 2);
  EXPECT_EQ(reader->layout().dp, 3);
  EXPECT_EQ(reader->tensors(Part::kModel).at("w").pieces.size(), 3u);
  for (const auto& [offsets, shape] : std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>{
           {{0, 0}, {6, 10}}, {{2, 1}, {3, 5}}, {{3, 2}, {2, 2}}, {{5, 9}, {1, 1}}}) {
    auto box = reader->Read(Part::kModel, "w", offsets, shape);
    ASSERT_TRUE(box.ok()) << box.status();
    EXPECT_TRUE(box->equal(w.narrow(0, offsets[0], shape[0]).narrow(1, offsets[1], shape[1])));
  }
  EXPECT_EQ(reader->ReadWhole(Part::kOptimizer, "step")->item<int64_t>(), 3);
  EXPECT_FALSE(reader->Read(Part::kModel, "w", {5, 0}, {2, 10}).ok());  // outside
  EXPECT_FALSE(reader->Read(Part::kModel, "nope", {0}, {1}).ok());

  // Pieces that leave a hole are a sharding bug, refused before anything becomes iter_4.
  state.model.pop_back();
  absl::Status hole = SaveShardedCheckpoint(dir, 4, "r", layout, RankPlace{}, state, nullptr);
  ASSERT_FALSE(hole.ok());
  EXPECT_NE(hole.message().find("cover 40 of its 60 elements"), std::string::npos) << hole;
  EXPECT_FALSE(utils::PathExists(IterationDirectory(dir, 4)));
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
  EXPECT_EQ(LatestIteration(dir).value(), std::optional<int64_t>(3));
}

}  // namespace
}  // namespace megatron::checkpointing
