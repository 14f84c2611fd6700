// ParallelLayout: which global rank plays which part in a 5-D parallel job (pure arithmetic, no torch).
//
// Megatron-LM places every rank on a dense grid of five axes, listed fastest-varying first in the
// order string "tp-cp-ep-dp-pp" (EP is 1 on the dense grid):
//
//   rank = tp_rank + cp_rank·TP + dp_rank·TP·CP + pp_rank·TP·CP·DP,   DP = world / (TP·PP·CP)
//
// so a tensor-parallel group is a run of adjacent ranks (keep it inside one NVLink node) and the
// pipeline axis is outermost. MoE layers use a second grid over the same ranks with CP folded away:
//
//   rank = etp_rank + ep_rank·ETP + edp_rank·ETP·EP + pp_rank·ETP·EP·EDP,   EDP = world / (ETP·EP·PP)
//
// and the pipeline groups of both grids coincide (checked in Create).
//
// A group "of kind K" is the set of ranks that differ only in K's own coordinates. The group lists
// returned here have Megatron's exact order and contents (see GenerateMaskedOrthogonalRankGroups):
// group g enumerates the non-member coordinates with the fastest axis first, and within a group the
// ranks ascend. Example, 16 ranks, TP=2, PP=4 (docstring of initialize_model_parallel):
//   TensorParallelGroups()   [0,1] [2,3] ... [14,15]
//   DataParallelGroups()     [0,2] [1,3] [4,6] [5,7] ... [13,15]
//   PipelineParallelGroups() [0,4,8,12] [1,5,9,13] [2,6,10,14] [3,7,11,15]
//   EmbeddingGroups()        [0,12] [1,13] [2,14] [3,15]   (first and last stage of each pipeline)
//
// Usage:
//   ParallelConfig config;
//   config.world_size = 16; config.tp = 2; config.pp = 4;
//   absl::StatusOr<ParallelLayout> layout = ParallelLayout::Create(config);  // error names the field
//   GroupMembership dp = *layout->GroupOf(GroupKind::kDataWithContext, my_rank);  // grad all-reduce
//   int next = layout->PipelineNextRank(my_rank);
//
// Rank arguments must lie in [0, world_size) and vp_stage in [0, vp); anything else is a programming
// error and aborts with a message (these are called in hot setup loops with already-validated ranks).
#ifndef MEGATRON_CORE_PARALLEL_STATE_PARALLEL_LAYOUT_H_
#define MEGATRON_CORE_PARALLEL_STATE_PARALLEL_LAYOUT_H_

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::parallel_state {

// Sizes of the parallel axes. Errors name the Megatron argument each field stands for.
struct ParallelConfig {
  int world_size = 1;
  int tp = 1;   // tensor_model_parallel_size
  int pp = 1;   // pipeline_model_parallel_size
  int cp = 1;   // context_parallel_size
  int ep = 1;   // expert_model_parallel_size
  int etp = 0;  // expert_tensor_parallel_size; 0 = same as tp (Megatron's default when unset)
  int vp = 1;   // virtual_pipeline_model_parallel_size: model chunks per pipeline rank (1 = none)
};

// Where one rank sits on the dense grid (tp, cp, dp, pp) and on the expert grid (etp, ep, edp, pp).
struct RankCoordinates {
  int tp = 0;
  int cp = 0;
  int dp = 0;
  int pp = 0;
  int etp = 0;
  int ep = 0;
  int edp = 0;
};
bool operator==(const RankCoordinates& a, const RankCoordinates& b);

// Group kinds, named after Megatron's process groups (the comment gives its RankGenerator token).
enum class GroupKind {
  kTensor,                     // "tp"
  kContext,                    // "cp"
  kData,                       // "dp" (without CP)
  kDataWithContext,            // "dp-cp": gradient reduction group when CP > 1
  kPipeline,                   // "pp"
  kModel,                      // "tp-pp"
  kTensorAndContext,           // "tp-cp"
  kTensorAndData,              // "tp-dp" (FP8 amax reduction)
  kTensorAndDataWithContext,   // "tp-dp-cp"
  kEmbedding,                  // {first, last} rank of each pipeline group
  kPositionEmbedding,          // {first} rank of each pipeline group
  kExpertModel,                // expert grid "ep"
  kExpertTensor,               // expert grid "tp"
  kExpertTensorAndModel,       // expert grid "tp-ep"
  kExpertTensorModelPipeline,  // expert grid "tp-ep-pp"
  kExpertData,                 // expert grid "dp"
};
inline constexpr int kNumGroupKinds = 16;
const char* GroupKindName(GroupKind kind);

// The group containing a rank: its ranks, which group of the kind it is, and the rank's index in it.
struct GroupMembership {
  std::vector<int> ranks;
  int group_index = 0;
  int index_in_group = 0;
};

// Megatron's generate_masked_orthogonal_rank_groups: `sizes` are the axis sizes, fastest first;
// a group is formed over the axes with mask[i] == true, one group per combination of the others.
// Groups are numbered by the unmasked coordinates (fastest first); members by the masked ones.
std::vector<std::vector<int>> GenerateMaskedOrthogonalRankGroups(const std::vector<int>& sizes,
                                                                 const std::vector<bool>& mask);

class ParallelLayout {
 public:
  // Validates the configuration (every size >= 1, world divisible by TP·PP·CP and by ETP·EP·PP,
  // VP > 1 only with PP > 1) and precomputes every group list.
  static absl::StatusOr<ParallelLayout> Create(const ParallelConfig& config);

  const ParallelConfig& config() const { return config_; }  // etp resolved (never 0)
  int world_size() const { return config_.world_size; }
  int tp() const { return config_.tp; }
  int pp() const { return config_.pp; }
  int cp() const { return config_.cp; }
  int dp() const { return dp_; }
  int ep() const { return config_.ep; }
  int etp() const { return config_.etp; }
  int edp() const { return edp_; }
  int vp() const { return config_.vp; }

  RankCoordinates Coordinates(int rank) const;
  // Inverse of Coordinates on the dense grid: uses tp, cp, dp, pp (the expert fields are ignored).
  int RankOf(const RankCoordinates& coords) const;
  // Inverse on the expert grid: uses etp, ep, edp, pp.
  int ExpertRankOf(const RankCoordinates& coords) const;

  const std::vector<std::vector<int>>& Groups(GroupKind kind) const;
  const std::vector<std::vector<int>>& TensorParallelGroups() const { return Groups(GroupKind::kTensor); }
  const std::vector<std::vector<int>>& ContextParallelGroups() const { return Groups(GroupKind::kContext); }
  const std::vector<std::vector<int>>& DataParallelGroups() const { return Groups(GroupKind::kData); }
  const std::vector<std::vector<int>>& DataParallelGroupsWithContextParallel() const {
    return Groups(GroupKind::kDataWithContext);
  }
  const std::vector<std::vector<int>>& PipelineParallelGroups() const { return Groups(GroupKind::kPipeline); }
  const std::vector<std::vector<int>>& ModelParallelGroups() const { return Groups(GroupKind::kModel); }
  const std::vector<std::vector<int>>& TensorAndContextParallelGroups() const {
    return Groups(GroupKind::kTensorAndContext);
  }
  const std::vector<std::vector<int>>& EmbeddingGroups() const { return Groups(GroupKind::kEmbedding); }
  const std::vector<std::vector<int>>& PositionEmbeddingGroups() const {
    return Groups(GroupKind::kPositionEmbedding);
  }
  const std::vector<std::vector<int>>& ExpertModelParallelGroups() const {
    return Groups(GroupKind::kExpertModel);
  }
  const std::vector<std::vector<int>>& ExpertTensorParallelGroups() const {
    return Groups(GroupKind::kExpertTensor);
  }
  const std::vector<std::vector<int>>& ExpertDataParallelGroups() const { return Groups(GroupKind::kExpertData); }

  // The group of `kind` containing `rank`. NotFound only for embedding / position-embedding kinds,
  // whose groups hold just the first (and last) pipeline stages.
  absl::StatusOr<GroupMembership> GroupOf(GroupKind kind, int rank) const;

  // Pipeline stage tests. The one-argument forms ignore virtual stages (Megatron's
  // ignore_virtual=True); the vp_stage forms also require the first / last model chunk.
  bool IsPipelineFirstStage(int rank) const;
  bool IsPipelineLastStage(int rank) const;
  bool IsPipelineFirstStage(int rank, int vp_stage) const;
  bool IsPipelineLastStage(int rank, int vp_stage) const;
  // Neighbours in the pipeline ring (the last stage's next is the first stage, as in Megatron).
  int PipelineNextRank(int rank) const;
  int PipelinePrevRank(int rank) const;
  int PipelineFirstRank(int rank) const;
  int PipelineLastRank(int rank) const;
  // Megatron's is_rank_in_embedding_group(ignore_virtual=False, vp_stage): the first rank of an
  // embedding group holds the embedding only in chunk 0, the last only in the last chunk.
  bool HoldsEmbedding(int rank, int vp_stage) const;

 private:
  ParallelLayout() = default;
  void CheckRank(int rank) const;
  void CheckVpStage(int vp_stage) const;

  ParallelConfig config_;
  int dp_ = 1;
  int edp_ = 1;
  std::array<std::vector<std::vector<int>>, kNumGroupKinds> groups_;
  // membership_[kind][rank] = {group index, index in group}, or {-1, -1} when not a member.
  std::array<std::vector<std::pair<int, int>>, kNumGroupKinds> membership_;
};

}  // namespace megatron::parallel_state

#endif  // MEGATRON_CORE_PARALLEL_STATE_PARALLEL_LAYOUT_H_
