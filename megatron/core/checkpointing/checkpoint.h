// Training checkpoints: model, optimizer and RNG state of one iteration, written atomically.
//
// Layout (Megatron's names where they exist):
//   <dir>/latest_checkpointed_iteration.txt        "120\n", replaced atomically after a checkpoint is complete
//   <dir>/iter_0000120/model.safetensors           parameters (fp32 master weights) by Megatron core names
//   <dir>/iter_0000120/optimizer.safetensors       AdamW state ("exp_avg.<param>", "exp_avg_sq.<param>", "step")
//   <dir>/iter_0000120/rng.safetensors             generator states ("cpu", "cuda")
//   <dir>/iter_0000120/metadata.json               format version, iteration, recipe, size + CRC-32C per file
//
// Note [Atomic checkpoints]: everything is written into iter_N.tmp.<pid>/, fsynced, and renamed to iter_N; only
// then does `latest` move (write-temp-fsync-rename). A crash at any moment leaves `latest` naming a complete
// checkpoint, and a half-written directory is never called iter_N. Loading verifies every file's size and
// CRC-32C against metadata.json, so truncation or bit rot is one clear error naming the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::checkpointing {

inline constexpr int kCheckpointFormatVersion = 1;

struct Checkpoint {
  int64_t iteration = 0;
  std::string recipe;  // the run's recipe in text format
  std::map<std::string, at::Tensor> model;
  std::map<std::string, at::Tensor> optimizer;
  std::map<std::string, at::Tensor> rng;
};

// "<dir>/iter_0000120".
std::string IterationDirectory(const std::string& dir, int64_t iteration);

// Writes `checkpoint` under `dir` (created if needed) and then points `latest` at it. See Note [Atomic checkpoints].
absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint);

// The iteration named by <dir>/latest_checkpointed_iteration.txt; nullopt when there is no checkpoint at all.
// A malformed tracker file is an error (never silently "no checkpoint").
absl::StatusOr<std::optional<int64_t>> LatestIteration(const std::string& dir);

enum class LoadParts { kAll, kModelOnly };

// Loads and verifies one checkpoint. Errors name the file and what is wrong with it.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir, int64_t iteration, LoadParts parts = LoadParts::kAll);

}  // namespace megatron::checkpointing
