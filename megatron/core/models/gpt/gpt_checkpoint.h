// Layout-independent GPT checkpoints: which box of which global (TP=1, PP=1) tensor each rank's parameter is,
// and saving/loading a rank's parameters and AdamW state through checkpointing's pieces
// (Note [Layout-independent checkpoints] in checkpointing/checkpoint.h).
//
//   GptCheckpointPlacement at{layout, place, world, vocab_size};
//   SaveGptCheckpoint(dir, it, recipe_text, named_params, adam.StateDict(), rng, at);        // collective
//   auto reader = checkpointing::CheckpointReader::Open(dir, it);
//   auto loaded = LoadGptCheckpoint(*reader, named_params, &state, at, LoadMode::kStrict);  // collective
//
// Note [GPT parameter shards]: parameter names are the chunks' names (global layer numbers under pipeline
// parallelism); a rank's tensor maps onto its global tensor as
//   linear_qkv.{weight,bias}, linear_fc1.{weight,bias}  column: rows [r·n, (r+1)·n) of the global rows (the QKV
//       rows are grouped by query group, so a row shard is whole groups: Note [QKV layout]); a gated MLP's
//       linear_fc1 holds [gate_r; up_r]: two pieces, rows r·c.. of the gate block and F + r·c.. of the up block
//       (c = F/tp, F = ffn_hidden_size), so the stored tensor is the TP=1 [gate; up];
//   linear_proj.weight, linear_fc2.weight                row: columns [r·n, (r+1)·n);
//   embedding.word_embeddings.weight, output_layer.weight vocab rows [r·n, (r+1)·n) clipped to the global
//       vocabulary: rows a rank holds past it (padding so that the vocabulary divides by TP) are not stored and
//       keep their values on load;
//   everything else (norms, biases of row-parallel layers, position embeddings) whole, identical on every TP rank.
// With tied embeddings a rank's output_layer.weight is the last pipeline stage's copy of the word embeddings: it
// is never stored and loads from embedding.word_embeddings.weight (its AdamW state likewise).
// A tensor replicated over ranks is written once: TP-replicated ones by TP rank 0, and everything by the
// (DP 0, CP 0) rank; the AdamW "step" by rank 0.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/transformer/module.h"

namespace megatron::distributed {
class Group;
}

namespace megatron::models {

// A box of a rank's tensor and the box of the global tensor it equals.
struct ShardPiece {
  std::vector<int64_t> local_offsets;
  std::vector<int64_t> global_offsets;
  std::vector<int64_t> shape;
};

// How one rank's parameter maps onto its global tensor (Note [GPT parameter shards]).
struct ParameterShard {
  std::string global_name;
  std::vector<int64_t> global_shape;
  std::vector<ShardPiece> pieces;  // disjoint; together the whole local tensor but any vocab padding rows
  bool tp_replicated = false;      // every TP rank holds the same tensor
  bool tied_copy = false;          // the last stage's copy of the tied word embeddings (never stored)
};

struct GptShardingInfo {
  int64_t vocab_size = 0;  // the global vocabulary (the TP=1 model's rows), <= local rows x TP
  bool gated_mlp = false;  // SwiGLU/GEGLU: linear_fc1 is [gate; up]
  bool tied_embeddings = false;
  int tp_rank = 0, tp_size = 1;
};

// Pure: the global tensor and boxes of parameter `name` with shape `local_shape` on TP rank info.tp_rank.
// InvalidArgument when the shape cannot be such a shard (e.g. more vocabulary rows than local rows x TP).
absl::StatusOr<ParameterShard> GptParameterShard(const std::string& name, const std::vector<int64_t>& local_shape,
                                                 const GptShardingInfo& info);

// Where this rank sits, for saving and loading.
struct GptCheckpointPlacement {
  checkpointing::SavedLayout layout;  // the run's layout (recorded in the checkpoint)
  checkpointing::RankPlace place;     // this rank's coordinates
  distributed::Group* world = nullptr;  // nullptr: a single process
  GptShardingInfo sharding;
};

// Collective over placement.world. `named_params`: every parameter of this rank (all its pipeline chunks);
// `optimizer_state`: AdamW::StateDict-style entries ("exp_avg.<param>", "exp_avg_sq.<param>", "step") for those
// parameters, empty to store no optimizer state; `rng`: this rank's generator states.
absl::Status SaveGptCheckpoint(const std::string& dir, int64_t iteration, const std::string& recipe,
                               const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                               const std::map<std::string, at::Tensor>& optimizer_state,
                               const std::map<std::string, at::Tensor>& rng, const GptCheckpointPlacement& placement);

// What a load found wrong, over all ranks (every rank gets the same report).
struct LoadReport {
  struct Mismatch {
    std::string name;
    std::vector<int64_t> expected, found;
  };
  std::vector<std::string> missing;     // the model has it, the checkpoint does not
  std::vector<std::string> unexpected;  // the checkpoint has it, the model does not
  std::vector<Mismatch> mismatched;     // both, with different global shapes
  bool empty() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string ToString() const;  // one line per problem, "missing: name [shape]" etc.
};

struct GptLoadResult {
  LoadReport report;
  // This rank's saved generator states when the checkpoint's tensor/pipeline/context layout equals this run's
  // (Megatron restores RNG only then); `rng_note` says why not otherwise.
  std::optional<std::map<std::string, at::Tensor>> rng;
  std::string rng_note;
};

// Collective over placement.world. Copies the checkpoint's boxes into `named_params` (in place, converting dtype
// and device) and, when `optimizer_state` is given, into its entries (keyed as for SaveGptCheckpoint; pass a map
// of correctly shaped tensors, e.g. the optimizer's StateDict, then load it into the optimizer). kStrict: any
// missing, unexpected or mis-shaped tensor fails on every rank with the report, before anything is copied;
// kNonStrict loads what matches and returns the report.
absl::StatusOr<GptLoadResult> LoadGptCheckpoint(checkpointing::CheckpointReader& reader,
                                                const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                                                std::map<std::string, at::Tensor>* optimizer_state,
                                                const GptCheckpointPlacement& placement, transformer::LoadMode mode);

}  // namespace megatron::models
