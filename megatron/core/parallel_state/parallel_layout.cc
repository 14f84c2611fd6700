#include "megatron/core/parallel_state/parallel_layout.h"

#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace megatron::parallel_state {
namespace {

// Axis positions in Megatron's default order "tp-cp-ep-dp-pp" (fastest first). Both grids use the
// same five slots: the dense grid has ep = 1, the expert grid has cp = 1.
enum Axis { kTp = 0, kCp = 1, kEp = 2, kDp = 3, kPp = 4 };

std::vector<bool> Mask(std::initializer_list<Axis> axes) {
  std::vector<bool> mask(5, false);
  for (Axis a : axes) mask[a] = true;
  return mask;
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ParallelLayout: %s\n", message.c_str());
  std::abort();
}

absl::Status CheckPositive(const char* field, int value) {
  if (value < 1) return absl::InvalidArgumentError(absl::StrCat(field, ": ", value, " must be >= 1"));
  return absl::OkStatus();
}

}  // namespace

bool operator==(const RankCoordinates& a, const RankCoordinates& b) {
  return a.tp == b.tp && a.cp == b.cp && a.dp == b.dp && a.pp == b.pp && a.etp == b.etp && a.ep == b.ep &&
         a.edp == b.edp;
}

const char* GroupKindName(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTensor: return "tensor";
    case GroupKind::kContext: return "context";
    case GroupKind::kData: return "data";
    case GroupKind::kDataWithContext: return "data_with_context";
    case GroupKind::kPipeline: return "pipeline";
    case GroupKind::kModel: return "model";
    case GroupKind::kTensorAndContext: return "tensor_and_context";
    case GroupKind::kTensorAndData: return "tensor_and_data";
    case GroupKind::kTensorAndDataWithContext: return "tensor_and_data_with_context";
    case GroupKind::kEmbedding: return "embedding";
    case GroupKind::kPositionEmbedding: return "position_embedding";
    case GroupKind::kExpertModel: return "expert_model";
    case GroupKind::kExpertTensor: return "expert_tensor";
    case GroupKind::kExpertTensorAndModel: return "expert_tensor_and_model";
    case GroupKind::kExpertTensorModelPipeline: return "expert_tensor_model_pipeline";
    case GroupKind::kExpertData: return "expert_data";
  }
  return "unknown";
}

std::vector<std::vector<int>> GenerateMaskedOrthogonalRankGroups(const std::vector<int>& sizes,
                                                                 const std::vector<bool>& mask) {
  // Strides of the full grid (fastest axis first), split into the group's own axes (masked) and the
  // axes that number the groups (unmasked). A member's rank is the dot product of its coordinates
  // with the strides, the masked coordinates coming from the index in the group and the unmasked ones
  // from the group index, both decomposed fastest-first: exactly Megatron's enumeration.
  std::vector<int> masked_shape, masked_stride, unmasked_shape, unmasked_stride;
  int stride = 1;
  for (size_t i = 0; i < sizes.size(); ++i) {
    (mask[i] ? masked_shape : unmasked_shape).push_back(sizes[i]);
    (mask[i] ? masked_stride : unmasked_stride).push_back(stride);
    stride *= sizes[i];
  }
  const int world = stride;
  int group_size = 1;
  for (int s : masked_shape) group_size *= s;
  const int num_groups = world / group_size;

  auto offset = [](int index, const std::vector<int>& shape, const std::vector<int>& strides) {
    int result = 0;
    for (size_t i = 0; i < shape.size(); ++i) {
      result += (index % shape[i]) * strides[i];
      index /= shape[i];
    }
    return result;
  };
  std::vector<std::vector<int>> groups(num_groups);
  for (int g = 0; g < num_groups; ++g) {
    const int base = offset(g, unmasked_shape, unmasked_stride);
    groups[g].reserve(group_size);
    for (int r = 0; r < group_size; ++r) groups[g].push_back(base + offset(r, masked_shape, masked_stride));
  }
  return groups;
}

absl::StatusOr<ParallelLayout> ParallelLayout::Create(const ParallelConfig& config) {
  for (absl::Status s : {CheckPositive("world_size", config.world_size),
                         CheckPositive("tensor_model_parallel_size", config.tp),
                         CheckPositive("pipeline_model_parallel_size", config.pp),
                         CheckPositive("context_parallel_size", config.cp),
                         CheckPositive("expert_model_parallel_size", config.ep),
                         CheckPositive("virtual_pipeline_model_parallel_size", config.vp)}) {
    if (!s.ok()) return s;
  }
  if (config.etp < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert_tensor_parallel_size: ", config.etp, " must be >= 1 (or 0 for the tensor parallel size)"));
  }
  ParallelLayout layout;
  layout.config_ = config;
  ParallelConfig& c = layout.config_;
  if (c.etp == 0) c.etp = c.tp;

  const long long model_size = 1LL * c.tp * c.pp * c.cp;
  if (c.world_size % model_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor_model_parallel_size (", c.tp, ") x pipeline_model_parallel_size (", c.pp,
        ") x context_parallel_size (", c.cp, ") = ", model_size, " does not divide world_size ", c.world_size));
  }
  layout.dp_ = static_cast<int>(c.world_size / model_size);

  const long long expert_size = 1LL * c.etp * c.ep * c.pp;
  if (c.world_size % expert_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert_tensor_parallel_size (", c.etp, ") x expert_model_parallel_size (", c.ep,
        ") x pipeline_model_parallel_size (", c.pp, ") = ", expert_size, " does not divide world_size ",
        c.world_size));
  }
  layout.edp_ = static_cast<int>(c.world_size / expert_size);

  if (c.vp > 1 && c.pp == 1) {
    return absl::InvalidArgumentError(absl::StrCat("virtual_pipeline_model_parallel_size: ", c.vp,
                                                   " needs pipeline_model_parallel_size > 1 (the interleaved "
                                                   "schedule splits each pipeline stage into chunks)"));
  }

  const std::vector<int> dense = {c.tp, c.cp, 1, layout.dp_, c.pp};
  const std::vector<int> expert = {c.etp, 1, c.ep, layout.edp_, c.pp};
  auto& g = layout.groups_;
  auto at = [&](GroupKind k) -> std::vector<std::vector<int>>& { return g[static_cast<int>(k)]; };
  at(GroupKind::kTensor) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kTp}));
  at(GroupKind::kContext) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kCp}));
  at(GroupKind::kData) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kDp}));
  at(GroupKind::kDataWithContext) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kDp, kCp}));
  at(GroupKind::kPipeline) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kPp}));
  at(GroupKind::kModel) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kTp, kPp}));
  at(GroupKind::kTensorAndContext) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kTp, kCp}));
  at(GroupKind::kTensorAndData) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kTp, kDp}));
  at(GroupKind::kTensorAndDataWithContext) = GenerateMaskedOrthogonalRankGroups(dense, Mask({kTp, kDp, kCp}));
  at(GroupKind::kExpertModel) = GenerateMaskedOrthogonalRankGroups(expert, Mask({kEp}));
  at(GroupKind::kExpertTensor) = GenerateMaskedOrthogonalRankGroups(expert, Mask({kTp}));
  at(GroupKind::kExpertTensorAndModel) = GenerateMaskedOrthogonalRankGroups(expert, Mask({kTp, kEp}));
  at(GroupKind::kExpertTensorModelPipeline) = GenerateMaskedOrthogonalRankGroups(expert, Mask({kTp, kEp, kPp}));
  at(GroupKind::kExpertData) = GenerateMaskedOrthogonalRankGroups(expert, Mask({kDp}));

  // Megatron asserts this: a pipeline send/recv pairs the same ranks for dense and MoE layers.
  if (GenerateMaskedOrthogonalRankGroups(expert, Mask({kPp})) != at(GroupKind::kPipeline)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert_model_parallel_size (", c.ep, ") / expert_tensor_parallel_size (", c.etp,
        "): the expert grid's pipeline groups differ from the dense grid's"));
  }

  // Megatron's default_embedding_ranks / default_position_embedding_ranks, one group per pipeline.
  for (const std::vector<int>& pipeline : at(GroupKind::kPipeline)) {
    if (pipeline.size() == 1) {
      at(GroupKind::kEmbedding).push_back({pipeline.front()});
    } else {
      at(GroupKind::kEmbedding).push_back({pipeline.front(), pipeline.back()});
    }
    at(GroupKind::kPositionEmbedding).push_back({pipeline.front()});
  }

  for (int k = 0; k < kNumGroupKinds; ++k) {
    layout.membership_[k].assign(c.world_size, {-1, -1});
    for (int gi = 0; gi < static_cast<int>(g[k].size()); ++gi) {
      for (int i = 0; i < static_cast<int>(g[k][gi].size()); ++i) layout.membership_[k][g[k][gi][i]] = {gi, i};
    }
  }
  return layout;
}

void ParallelLayout::CheckRank(int rank) const {
  if (rank < 0 || rank >= config_.world_size) {
    Die(absl::StrCat("rank ", rank, " is outside [0, ", config_.world_size, ")"));
  }
}

void ParallelLayout::CheckVpStage(int vp_stage) const {
  if (vp_stage < 0 || vp_stage >= config_.vp) {
    Die(absl::StrCat("vp_stage ", vp_stage, " is outside [0, ", config_.vp, ")"));
  }
}

RankCoordinates ParallelLayout::Coordinates(int rank) const {
  CheckRank(rank);
  RankCoordinates c;
  int r = rank;
  c.tp = r % config_.tp;
  r /= config_.tp;
  c.cp = r % config_.cp;
  r /= config_.cp;
  c.dp = r % dp_;
  c.pp = r / dp_;
  r = rank;
  c.etp = r % config_.etp;
  r /= config_.etp;
  c.ep = r % config_.ep;
  r /= config_.ep;
  c.edp = r % edp_;
  return c;
}

int ParallelLayout::RankOf(const RankCoordinates& c) const {
  if (c.tp < 0 || c.tp >= config_.tp || c.cp < 0 || c.cp >= config_.cp || c.dp < 0 || c.dp >= dp_ || c.pp < 0 ||
      c.pp >= config_.pp) {
    Die(absl::StrCat("coordinates (tp ", c.tp, ", cp ", c.cp, ", dp ", c.dp, ", pp ", c.pp, ") are off the grid"));
  }
  return c.tp + config_.tp * (c.cp + config_.cp * (c.dp + dp_ * c.pp));
}

int ParallelLayout::ExpertRankOf(const RankCoordinates& c) const {
  if (c.etp < 0 || c.etp >= config_.etp || c.ep < 0 || c.ep >= config_.ep || c.edp < 0 || c.edp >= edp_ ||
      c.pp < 0 || c.pp >= config_.pp) {
    Die(absl::StrCat("expert coordinates (etp ", c.etp, ", ep ", c.ep, ", edp ", c.edp, ", pp ", c.pp,
                     ") are off the grid"));
  }
  return c.etp + config_.etp * (c.ep + config_.ep * (c.edp + edp_ * c.pp));
}

const std::vector<std::vector<int>>& ParallelLayout::Groups(GroupKind kind) const {
  return groups_[static_cast<int>(kind)];
}

absl::StatusOr<GroupMembership> ParallelLayout::GroupOf(GroupKind kind, int rank) const {
  CheckRank(rank);
  const auto [group, index] = membership_[static_cast<int>(kind)][rank];
  if (group < 0) {
    return absl::NotFoundError(absl::StrCat("rank ", rank, " is in no ", GroupKindName(kind), " group"));
  }
  return GroupMembership{Groups(kind)[group], group, index};
}

bool ParallelLayout::IsPipelineFirstStage(int rank) const { return Coordinates(rank).pp == 0; }

bool ParallelLayout::IsPipelineLastStage(int rank) const { return Coordinates(rank).pp == config_.pp - 1; }

bool ParallelLayout::IsPipelineFirstStage(int rank, int vp_stage) const {
  CheckVpStage(vp_stage);
  return vp_stage == 0 && IsPipelineFirstStage(rank);
}

bool ParallelLayout::IsPipelineLastStage(int rank, int vp_stage) const {
  CheckVpStage(vp_stage);
  return vp_stage == config_.vp - 1 && IsPipelineLastStage(rank);
}

int ParallelLayout::PipelineNextRank(int rank) const {
  RankCoordinates c = Coordinates(rank);
  c.pp = (c.pp + 1) % config_.pp;
  return RankOf(c);
}

int ParallelLayout::PipelinePrevRank(int rank) const {
  RankCoordinates c = Coordinates(rank);
  c.pp = (c.pp + config_.pp - 1) % config_.pp;
  return RankOf(c);
}

int ParallelLayout::PipelineFirstRank(int rank) const {
  RankCoordinates c = Coordinates(rank);
  c.pp = 0;
  return RankOf(c);
}

int ParallelLayout::PipelineLastRank(int rank) const {
  RankCoordinates c = Coordinates(rank);
  c.pp = config_.pp - 1;
  return RankOf(c);
}

bool ParallelLayout::HoldsEmbedding(int rank, int vp_stage) const {
  CheckRank(rank);
  CheckVpStage(vp_stage);
  const int group = membership_[static_cast<int>(GroupKind::kEmbedding)][rank].first;
  if (group < 0) return false;
  const std::vector<int>& ranks = groups_[static_cast<int>(GroupKind::kEmbedding)][group];
  // Same precedence as Megatron: with PP = 1 the single rank is "first", so only chunk 0 counts
  // (VP > 1 needs PP > 1, so that case has a single chunk anyway).
  if (rank == ranks.front()) return IsPipelineFirstStage(rank, vp_stage);
  if (rank == ranks.back()) return IsPipelineLastStage(rank, vp_stage);
  return true;  // a middle member of a custom embedding group (not produced by the default rule)
}

}  // namespace megatron::parallel_state
