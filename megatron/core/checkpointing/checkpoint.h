// Training checkpoints: model, optimizer and RNG state of one iteration, written atomically, independent of the
// parallel layout that saved them (format version 2; version 1 single-file checkpoints still load).
//
// Layout (Megatron's names where they exist):
//   <dir>/latest_checkpointed_iteration.txt        "120\n", replaced atomically after a checkpoint is complete
//   <dir>/iter_0000120/metadata.json               format version, iteration, recipe, the saving layout, size +
//                                                  CRC-32C per file, and the tensor index (below)
//   <dir>/iter_0000120/model.safetensors           one process: every parameter, whole, by its Megatron core name
//   <dir>/iter_0000120/optimizer.safetensors       AdamW state ("exp_avg.<param>", "exp_avg_sq.<param>", "step")
//   <dir>/iter_0000120/rng.safetensors             generator states ("cpu", "cuda")
// With several ranks each rank r of W writes model-0000r-of-0000W.safetensors (and optimizer-, rng-) holding the
// pieces it owns, and only when it owns any.
//
// Note [Layout-independent checkpoints] (Megatron's dist_checkpointing ShardedTensor, torch DCP): every tensor is
// stored under its GLOBAL name (the TP=1, PP=1 model's: decoder.layers.<global i>...) with its global shape, as
// one or more rectangular pieces, each with its offsets in the global tensor. metadata.json's "tensors" maps
//   "model" / "optimizer" -> name -> {dtype, shape, pieces: [{file, key, offsets, shape}]}
// and the pieces of a tensor tile it exactly (checked when saving). A tensor replicated over ranks (DP replicas,
// TP-replicated norms) is written once, by its owner. Loading reads any box of a global tensor from the pieces it
// overlaps (CheckpointReader::Read), so a checkpoint saved at one layout loads at any other; the model-specific
// part (which box of which global tensor a rank's parameter is: TP shards, the SwiGLU [gate_r; up_r] interleave,
// vocab padding) lives with the model (models/gpt/gpt_sharding.h).
//
// Note [Atomic checkpoints]: everything is written into iter_N.tmp.<pid of rank 0>/ (every rank its own files and
// a small index-<rank>.json), fsynced; after a barrier rank 0 merges the indexes into metadata.json, renames the
// directory to iter_N, and only then moves `latest` (write-temp-fsync-rename). A crash at any moment leaves
// `latest` naming a complete checkpoint, and a half-written directory is never called iter_N. Loading checks
// every file's size when the checkpoint is opened and its CRC-32C before the first read from it, so truncation
// or bit rot is one clear error naming the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/checkpointing/safetensors.h"

namespace megatron::distributed {
class Group;
}

namespace megatron::checkpointing {

// 1: one model/optimizer/rng.safetensors of whole tensors. 2: pieces with global offsets, the saving layout.
inline constexpr int kCheckpointFormatVersion = 2;

// A whole (single-process) checkpoint: every tensor complete, by its global name.
struct Checkpoint {
  int64_t iteration = 0;
  std::string recipe;  // the run's recipe in text format
  std::map<std::string, at::Tensor> model;
  std::map<std::string, at::Tensor> optimizer;
  std::map<std::string, at::Tensor> rng;
};

// The parallel layout a checkpoint was saved from (recorded for information and to decide whether per-rank RNG
// states apply).
struct SavedLayout {
  int world_size = 1;
  int tp = 1, pp = 1, vp = 1, cp = 1, dp = 1;
  bool distributed_optimizer = false;
};
bool SameModelParallelism(const SavedLayout& a, const SavedLayout& b);  // tp, pp, vp, cp equal
std::string DebugString(const SavedLayout& layout);                  // "TP=2 PP=2 VP=1 CP=1 DP=1"

// One rank's place in the layout.
struct RankPlace {
  int rank = 0, tp = 0, pp = 0, cp = 0, dp = 0;
};

// A rectangular piece of a global tensor: data == global[offsets[0] : offsets[0] + data.size(0), ...].
struct TensorPiece {
  std::string name;  // global name
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offsets;
  at::Tensor data;
};

enum class Part { kModel, kOptimizer };

// What one rank writes.
struct RankState {
  std::vector<TensorPiece> model;
  std::vector<TensorPiece> optimizer;
  std::map<std::string, at::Tensor> rng;  // this rank's generator states (may be empty)
};

// "<dir>/iter_0000120".
std::string IterationDirectory(const std::string& dir, int64_t iteration);

// Writes `checkpoint` under `dir` (created if needed) and then points `latest` at it. See Note [Atomic checkpoints].
absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint);

// Collective over `world` (nullptr: a single process): every rank passes the pieces it owns; the pieces of all
// ranks must tile their tensors exactly (an Internal error naming the tensor otherwise: a sharding bug). Every
// rank returns the same verdict; on success iteration N is complete and `latest` names it.
absl::Status SaveShardedCheckpoint(const std::string& dir, int64_t iteration, const std::string& recipe,
                                   const SavedLayout& layout, const RankPlace& place, const RankState& state,
                                   distributed::Group* world);

// The iteration named by <dir>/latest_checkpointed_iteration.txt; nullopt when there is no checkpoint at all.
// A malformed tracker file is an error (never silently "no checkpoint").
absl::StatusOr<std::optional<int64_t>> LatestIteration(const std::string& dir);

enum class LoadParts { kAll, kModelOnly };

// Collective over `world` (nullptr or size 1: returns `local`): every rank returns the same verdict, its own error
// or Aborted ("<what>: another rank failed") when another rank failed, so that no rank goes on alone.
absl::Status AllRanksOk(distributed::Group* world, const absl::Status& local, const std::string& what);

// Loads one checkpoint of any version and layout as whole tensors (RNG: rank 0's). Errors name the file and what
// is wrong with it.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir, int64_t iteration, LoadParts parts = LoadParts::kAll);

// A stored global tensor.
struct StoredTensor {
  struct Piece {
    std::string file;  // in the iteration directory
    std::string key;   // the tensor's name in that file
    std::vector<int64_t> offsets, shape;
  };
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  std::vector<Piece> pieces;
};

// Reads boxes of global tensors from a checkpoint of any version and saving layout.
class CheckpointReader {
 public:
  // Reads metadata.json and checks that every listed file exists with the recorded size.
  static absl::StatusOr<CheckpointReader> Open(const std::string& dir, int64_t iteration);

  int format_version() const { return format_version_; }
  int64_t iteration() const { return iteration_; }
  const std::string& recipe() const { return recipe_; }
  const SavedLayout& layout() const { return layout_; }
  const std::string& directory() const { return iter_dir_; }
  const std::map<std::string, StoredTensor>& tensors(Part part) const {
    return part == Part::kModel ? model_ : optimizer_;
  }

  // global[offsets : offsets + shape] of tensor `name`, assembled from the pieces it overlaps (each piece's file
  // CRC-checked before its first use). Errors name the tensor, or the file.
  absl::StatusOr<at::Tensor> Read(Part part, const std::string& name, const std::vector<int64_t>& offsets,
                                  const std::vector<int64_t>& shape);
  absl::StatusOr<at::Tensor> ReadWhole(Part part, const std::string& name);
  // The generator states saved by the rank with `place`'s tp/pp/cp/dp coordinates; nullopt when none was saved.
  absl::StatusOr<std::optional<std::map<std::string, at::Tensor>>> Rng(const RankPlace& place);

 private:
  struct RngEntry {
    RankPlace place;
    std::string file;
  };
  struct File {
    uint64_t bytes = 0;
    uint32_t crc32c = 0;
    bool verified = false;
    std::optional<SafetensorsHeader> header;
  };
  absl::StatusOr<const SafetensorsHeader*> VerifiedHeader(const std::string& file);

  int format_version_ = 0;
  int64_t iteration_ = 0;
  std::string recipe_;
  std::string iter_dir_;
  std::string metadata_path_;
  SavedLayout layout_;
  std::map<std::string, StoredTensor> model_, optimizer_;
  std::vector<RngEntry> rng_;
  std::map<std::string, File> files_;
};

}  // namespace megatron::checkpointing
