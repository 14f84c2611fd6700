// LayerAssignment: which transformer layers each pipeline rank builds, and TP/CP divisibility checks.
//
// With PP pipeline ranks and VP virtual chunks per rank the model is cut into PP·VP contiguous
// chunks, laid out in model order as chunk (vp_stage 0, rank 0), (0, 1), ..., (0, PP-1), (1, 0), ...
// so activations go around the pipeline ring VP times. Chunk (r, v) therefore starts at
//
//   offset(r, v) = sum of the sizes of all chunks (v', r') with v' < v, or v' == v and r' < r
//
// which for the even split is Megatron's get_transformer_layer_offset:
//   offset = v·(L/VP) + r·(L/(PP·VP))
// e.g. L = 16, PP = 4, VP = 2 (initialize_model_parallel's docstring, 1-based there):
//   rank 0: [0,1] [8,9]   rank 1: [2,3] [10,11]   rank 2: [4,5] [12,13]   rank 3: [6,7] [14,15]
//
// Four ways to build one (all check sum == num_layers and never drop a layer silently; a chunk may
// hold zero layers only when the caller asked for it explicitly):
//   Even(L, PP, VP)                     L must be divisible by PP·VP;
//   FromStageCounts(L, PP, VP, counts)  one count per pipeline rank, each split evenly over VP chunks;
//   FromChunkCounts(L, PP, VP, counts)  one count per chunk, in model order (index v·PP + r);
//   FirstLastStage(L, PP, VP, first, last)  Megatron's --decoder-first/last-pipeline-num-layers:
//                                       the given end stages get those counts, the remaining stages
//                                       share the rest evenly; every stage's count divisible by VP.
//                                       Offsets equal Megatron's get_transformer_layer_offset (tested
//                                       for VP = 1, and for VP > 1 with the first count given; with VP > 1
//                                       and only the last count given, the interleaved formula we read
//                                       (a 2025 copy of it) puts ranks 0 and 1 at the same offset, so we
//                                       keep the layout above, where rank 0 is an ordinary middle stage).
// Layer ids are 0-based here (Megatron's layer_number is this + 1).
//
// CheckDivisibility validates model dimensions against TP/CP/EP and returns the padded vocabulary.
#ifndef MEGATRON_CORE_PARALLEL_STATE_LAYER_ASSIGNMENT_H_
#define MEGATRON_CORE_PARALLEL_STATE_LAYER_ASSIGNMENT_H_

#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::parallel_state {

// Global layers [begin, end), 0-based.
struct LayerRange {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
  bool operator==(const LayerRange& o) const { return begin == o.begin && end == o.end; }
};

class LayerAssignment {
 public:
  static absl::StatusOr<LayerAssignment> Even(int num_layers, int pp, int vp = 1);
  static absl::StatusOr<LayerAssignment> FromStageCounts(int num_layers, int pp, int vp,
                                                         const std::vector<int>& layers_per_stage);
  static absl::StatusOr<LayerAssignment> FromChunkCounts(int num_layers, int pp, int vp,
                                                         const std::vector<int>& layers_per_chunk);
  static absl::StatusOr<LayerAssignment> FirstLastStage(int num_layers, int pp, int vp,
                                                        std::optional<int> first_stage_layers,
                                                        std::optional<int> last_stage_layers);

  int num_layers() const { return num_layers_; }
  int pp() const { return pp_; }
  int vp() const { return vp_; }

  // The layers of chunk vp_stage on pipeline rank pp_rank (out-of-range arguments abort).
  LayerRange Chunk(int pp_rank, int vp_stage = 0) const;
  int Offset(int pp_rank, int vp_stage = 0) const { return Chunk(pp_rank, vp_stage).begin; }
  int NumLayersToBuild(int pp_rank, int vp_stage = 0) const { return Chunk(pp_rank, vp_stage).size(); }
  // Every layer of a pipeline rank, chunk 0 first.
  std::vector<int> LayersOf(int pp_rank) const;
  // {pp_rank, vp_stage} owning a layer; InvalidArgument for a layer outside [0, num_layers).
  absl::StatusOr<std::pair<int, int>> OwnerOf(int layer) const;

 private:
  LayerAssignment() = default;
  int num_layers_ = 0;
  int pp_ = 1;
  int vp_ = 1;
  std::vector<LayerRange> chunks_;  // model order: index vp_stage * pp + pp_rank
};

// Model dimensions that parallelism splits. Zero means "not used / not checked".
struct ModelDims {
  int num_attention_heads = 0;
  int num_query_groups = 0;  // 0: same as num_attention_heads (multi-head attention)
  int ffn_hidden_size = 0;
  int vocab_size = 0;
  int make_vocab_size_divisible_by = 128;
  int seq_length = 0;
  bool sequence_parallel = false;
  int num_moe_experts = 0;  // 0: dense model
};

// Megatron's _vocab_size_with_padding: round vocab_size up to a multiple of
// make_vocab_size_divisible_by·tp, so each TP rank holds an equal, aligned slice of the embedding.
int PaddedVocabSize(int vocab_size, int make_vocab_size_divisible_by, int tp);

// Checks heads, query groups and ffn_hidden_size divisible by TP; seq_length divisible by 2·CP when
// CP > 1 (the load-balanced causal split gives each CP rank two chunks) and, with sequence
// parallelism, each CP rank's share divisible by TP; num_moe_experts divisible by EP. The vocabulary
// is padded rather than rejected: returns the padded vocabulary size (0 when vocab_size is 0).
absl::StatusOr<int> CheckDivisibility(const ModelDims& dims, int tp, int cp = 1, int ep = 1);

}  // namespace megatron::parallel_state

#endif  // MEGATRON_CORE_PARALLEL_STATE_LAYER_ASSIGNMENT_H_
