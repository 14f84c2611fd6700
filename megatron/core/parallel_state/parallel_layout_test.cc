#include "megatron/core/parallel_state/parallel_layout.h"

#include <algorithm>
#include <array>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace megatron::parallel_state {
namespace {

using Groups = std::vector<std::vector<int>>;

ParallelLayout MakeLayout(int world, int tp, int pp, int cp = 1, int ep = 1, int etp = 0, int vp = 1) {
  ParallelConfig c;
  c.world_size = world;
  c.tp = tp;
  c.pp = pp;
  c.cp = cp;
  c.ep = ep;
  c.etp = etp;
  c.vp = vp;
  absl::StatusOr<ParallelLayout> layout = ParallelLayout::Create(c);
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

std::string CreateError(const ParallelConfig& c) {
  absl::StatusOr<ParallelLayout> layout = ParallelLayout::Create(c);
  EXPECT_FALSE(layout.ok());
  return layout.ok() ? "" : std::string(layout.status().message());
}

// Docstring of Megatron's initialize_model_parallel: 16 GPUs, TP = 2, PP = 4.
TEST(ParallelLayoutTest, MegatronDocstringExample) {
  const ParallelLayout layout = MakeLayout(16, 2, 4);
  EXPECT_EQ(layout.dp(), 2);
  EXPECT_EQ(layout.DataParallelGroups(),
            (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(layout.TensorParallelGroups(),
            (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}));
  EXPECT_EQ(layout.PipelineParallelGroups(), (Groups{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}));
  // default_embedding_ranks / default_position_embedding_ranks applied to each pipeline group.
  EXPECT_EQ(layout.EmbeddingGroups(), (Groups{{0, 12}, {1, 13}, {2, 14}, {3, 15}}));
  EXPECT_EQ(layout.PositionEmbeddingGroups(), (Groups{{0}, {1}, {2}, {3}}));
  // Without CP the dp-cp group is the dp group, and model parallel = tp x pp.
  EXPECT_EQ(layout.DataParallelGroupsWithContextParallel(), layout.DataParallelGroups());
  EXPECT_EQ(layout.ModelParallelGroups(), (Groups{{0, 1, 4, 5, 8, 9, 12, 13}, {2, 3, 6, 7, 10, 11, 14, 15}}));
}

// Docstring of initialize_model_parallel, context_parallel_size: 8 GPUs, TP = 4, CP = 2.
TEST(ParallelLayoutTest, MegatronContextParallelDocstringExample) {
  const ParallelLayout layout = MakeLayout(8, 4, 1, 2);
  EXPECT_EQ(layout.ContextParallelGroups(), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(layout.TensorParallelGroups(), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(layout.TensorAndContextParallelGroups(), (Groups{{0, 1, 2, 3, 4, 5, 6, 7}}));
  EXPECT_EQ(layout.dp(), 1);
  EXPECT_EQ(layout.DataParallelGroupsWithContextParallel(), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
}

// Docstring of generate_masked_orthogonal_rank_groups.
TEST(GenerateMaskedOrthogonalRankGroupsTest, MegatronDocstringExamples) {
  // parallel_size = [tp, dp, pp] = [2, 3, 4], mask = [False, True, False].
  const Groups dp = GenerateMaskedOrthogonalRankGroups({2, 3, 4}, {false, true, false});
  ASSERT_EQ(dp.size(), 8u);
  EXPECT_EQ(dp[0], (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(dp[1], (std::vector<int>{1, 3, 5}));
  EXPECT_EQ(dp[7], (std::vector<int>{19, 21, 23}));
  // 8 GPUs, order tp-pp-dp, sizes 2-2-2: dp groups [[0, 4], [1, 5], [2, 6], [3, 7]].
  EXPECT_EQ(GenerateMaskedOrthogonalRankGroups({2, 2, 2}, {false, false, true}),
            (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
}

TEST(ParallelLayoutTest, ExpertGrid) {
  // 8 ranks, TP 2, EP 4, ETP 1: EDP = 8 / 4 = 2. Expert rank = etp + ep*1 + edp*4.
  const ParallelLayout layout = MakeLayout(8, 2, 1, 1, 4, 1);
  EXPECT_EQ(layout.edp(), 2);
  EXPECT_EQ(layout.ExpertModelParallelGroups(), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(layout.ExpertDataParallelGroups(), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(layout.ExpertTensorParallelGroups(), (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  // ETP unset means ETP = TP (Megatron's default): EP 2 x ETP 2 -> expert tp groups = dense tp groups.
  const ParallelLayout defaulted = MakeLayout(8, 2, 1, 1, 2);
  EXPECT_EQ(defaulted.etp(), 2);
  EXPECT_EQ(defaulted.ExpertTensorParallelGroups(), defaulted.TensorParallelGroups());
  EXPECT_EQ(defaulted.ExpertModelParallelGroups(), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(defaulted.Groups(GroupKind::kExpertTensorAndModel), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
}

TEST(ParallelLayoutTest, PipelineHelpers) {
  const ParallelLayout layout = MakeLayout(16, 2, 4, 1, 1, 0, 2);
  EXPECT_EQ(layout.PipelineNextRank(0), 4);
  EXPECT_EQ(layout.PipelineNextRank(13), 1);  // ring: last stage -> first
  EXPECT_EQ(layout.PipelinePrevRank(1), 13);
  EXPECT_EQ(layout.PipelinePrevRank(9), 5);
  EXPECT_EQ(layout.PipelineFirstRank(11), 3);
  EXPECT_EQ(layout.PipelineLastRank(3), 15);
  EXPECT_TRUE(layout.IsPipelineFirstStage(2));
  EXPECT_TRUE(layout.IsPipelineFirstStage(2, 0));
  EXPECT_FALSE(layout.IsPipelineFirstStage(2, 1));
  EXPECT_FALSE(layout.IsPipelineFirstStage(4));
  EXPECT_TRUE(layout.IsPipelineLastStage(14));
  EXPECT_TRUE(layout.IsPipelineLastStage(14, 1));
  EXPECT_FALSE(layout.IsPipelineLastStage(14, 0));
  EXPECT_TRUE(layout.HoldsEmbedding(0, 0));
  EXPECT_FALSE(layout.HoldsEmbedding(0, 1));
  EXPECT_TRUE(layout.HoldsEmbedding(12, 1));
  EXPECT_FALSE(layout.HoldsEmbedding(12, 0));
  EXPECT_FALSE(layout.HoldsEmbedding(4, 0));
}

TEST(ParallelLayoutTest, GroupOf) {
  const ParallelLayout layout = MakeLayout(16, 2, 4);
  absl::StatusOr<GroupMembership> dp = layout.GroupOf(GroupKind::kData, 7);
  ASSERT_TRUE(dp.ok());
  EXPECT_EQ(dp->ranks, (std::vector<int>{5, 7}));
  EXPECT_EQ(dp->group_index, 3);
  EXPECT_EQ(dp->index_in_group, 1);
  absl::StatusOr<GroupMembership> emb = layout.GroupOf(GroupKind::kEmbedding, 13);
  ASSERT_TRUE(emb.ok());
  EXPECT_EQ(emb->ranks, (std::vector<int>{1, 13}));
  EXPECT_EQ(emb->index_in_group, 1);
  absl::StatusOr<GroupMembership> none = layout.GroupOf(GroupKind::kEmbedding, 5);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("embedding"), absl::string_view::npos);
}

TEST(ParallelLayoutTest, ErrorsNameTheField) {
  ParallelConfig c;
  c.world_size = 8;
  c.tp = 3;
  std::string message = CreateError(c);
  EXPECT_NE(message.find("tensor_model_parallel_size (3)"), std::string::npos) << message;
  EXPECT_NE(message.find("world_size 8"), std::string::npos) << message;

  c = ParallelConfig();
  c.world_size = 8;
  c.vp = 2;
  message = CreateError(c);
  EXPECT_NE(message.find("virtual_pipeline_model_parallel_size: 2"), std::string::npos) << message;

  c = ParallelConfig();
  c.world_size = 8;
  c.ep = 3;
  message = CreateError(c);
  EXPECT_NE(message.find("expert_model_parallel_size (3)"), std::string::npos) << message;

  c = ParallelConfig();
  c.world_size = 8;
  c.cp = 0;
  message = CreateError(c);
  EXPECT_NE(message.find("context_parallel_size: 0"), std::string::npos) << message;

  c = ParallelConfig();
  c.world_size = 0;
  message = CreateError(c);
  EXPECT_NE(message.find("world_size: 0"), std::string::npos) << message;
}

TEST(ParallelLayoutDeathTest, OutOfRangeRankAborts) {
  const ParallelLayout layout = MakeLayout(4, 2, 2);
  EXPECT_DEATH(layout.Coordinates(4), "rank 4 is outside");
  EXPECT_DEATH(layout.IsPipelineFirstStage(0, 1), "vp_stage 1 is outside");
}

// ---- Exhaustive check against the definition, for every world <= 16 ----------------------------

// Reference coordinates built from the formula rank = tp + cp*TP + dp*TP*CP + pp*TP*CP*DP by
// enumeration (not by division), and likewise on the expert grid.
struct Reference {
  std::vector<std::array<int, 4>> dense;   // rank -> {tp, cp, dp, pp}
  std::vector<std::array<int, 4>> expert;  // rank -> {etp, ep, edp, pp}
};

Reference BuildReference(int world, int tp, int cp, int dp, int pp, int etp, int ep, int edp) {
  Reference ref;
  ref.dense.resize(world);
  ref.expert.resize(world);
  for (int p = 0; p < pp; ++p)
    for (int d = 0; d < dp; ++d)
      for (int c = 0; c < cp; ++c)
        for (int t = 0; t < tp; ++t) ref.dense[t + c * tp + d * tp * cp + p * tp * cp * dp] = {t, c, d, p};
  for (int p = 0; p < pp; ++p)
    for (int d = 0; d < edp; ++d)
      for (int e = 0; e < ep; ++e)
        for (int t = 0; t < etp; ++t) ref.expert[t + e * etp + d * etp * ep + p * etp * ep * edp] = {t, e, d, p};
  return ref;
}

// A group kind over a 4-axis grid: which axes are the group's own (fastest first). The reference
// group of rank r is every rank agreeing with r off those axes; Megatron numbers groups by the other
// axes fastest-first and members by the own axes fastest-first.
struct KindSpec {
  GroupKind kind;
  bool expert;
  std::array<bool, 4> own;
};

void CheckKind(const ParallelLayout& layout, const Reference& ref, const KindSpec& spec, const std::string& where) {
  const int world = layout.world_size();
  const auto& coords = spec.expert ? ref.expert : ref.dense;
  const std::array<int, 4> sizes = spec.expert
                                       ? std::array<int, 4>{layout.etp(), layout.ep(), layout.edp(), layout.pp()}
                                       : std::array<int, 4>{layout.tp(), layout.cp(), layout.dp(), layout.pp()};
  const Groups& groups = layout.Groups(spec.kind);
  std::vector<int> seen(world, 0);
  for (const auto& g : groups) {
    EXPECT_TRUE(std::is_sorted(g.begin(), g.end())) << where;
    for (int r : g) ++seen[r];
  }
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(seen[r], 1) << where << " rank " << r << " kind " << GroupKindName(spec.kind);
  }
  for (int r = 0; r < world; ++r) {
    std::vector<int> expected;
    for (int s = 0; s < world; ++s) {
      bool same = true;
      for (int a = 0; a < 4; ++a) same = same && (spec.own[a] || coords[s][a] == coords[r][a]);
      if (same) expected.push_back(s);
    }
    int group_index = 0, index_in_group = 0, gmul = 1, imul = 1;
    for (int a = 0; a < 4; ++a) {
      if (spec.own[a]) {
        index_in_group += coords[r][a] * imul;
        imul *= sizes[a];
      } else {
        group_index += coords[r][a] * gmul;
        gmul *= sizes[a];
      }
    }
    absl::StatusOr<GroupMembership> m = layout.GroupOf(spec.kind, r);
    ASSERT_TRUE(m.ok()) << where;
    EXPECT_EQ(m->ranks, expected) << where << " rank " << r << " kind " << GroupKindName(spec.kind);
    EXPECT_EQ(m->group_index, group_index) << where << " rank " << r << " kind " << GroupKindName(spec.kind);
    EXPECT_EQ(m->index_in_group, index_in_group) << where << " rank " << r << " kind " << GroupKindName(spec.kind);
  }
}

std::vector<int> Divisors(int n) {
  std::vector<int> d;
  for (int i = 1; i <= n; ++i)
    if (n % i == 0) d.push_back(i);
  return d;
}

TEST(ParallelLayoutTest, ExhaustiveAgainstDefinition) {
  const std::vector<KindSpec> specs = {
      {GroupKind::kTensor, false, {true, false, false, false}},
      {GroupKind::kContext, false, {false, true, false, false}},
      {GroupKind::kData, false, {false, false, true, false}},
      {GroupKind::kDataWithContext, false, {false, true, true, false}},
      {GroupKind::kPipeline, false, {false, false, false, true}},
      {GroupKind::kModel, false, {true, false, false, true}},
      {GroupKind::kTensorAndContext, false, {true, true, false, false}},
      {GroupKind::kTensorAndData, false, {true, false, true, false}},
      {GroupKind::kTensorAndDataWithContext, false, {true, true, true, false}},
      {GroupKind::kExpertTensor, true, {true, false, false, false}},
      {GroupKind::kExpertModel, true, {false, true, false, false}},
      {GroupKind::kExpertData, true, {false, false, true, false}},
      {GroupKind::kExpertTensorAndModel, true, {true, true, false, false}},
      {GroupKind::kExpertTensorModelPipeline, true, {true, true, false, true}},
  };
  int configs = 0;
  for (int world = 1; world <= 16; ++world) {
    for (int tp : Divisors(world))
      for (int pp : Divisors(world / tp))
        for (int cp : Divisors(world / (tp * pp)))
          for (int etp : Divisors(world / pp))
            for (int ep : Divisors(world / (pp * etp))) {
              const std::string where = "world " + std::to_string(world) + " tp " + std::to_string(tp) + " pp " +
                                        std::to_string(pp) + " cp " + std::to_string(cp) + " etp " +
                                        std::to_string(etp) + " ep " + std::to_string(ep);
              const ParallelLayout layout = MakeLayout(world, tp, pp, cp, ep, etp);
              const int dp = world / (tp * pp * cp);
              const int edp = world / (etp * ep * pp);
              ASSERT_EQ(layout.dp(), dp) << where;
              ASSERT_EQ(layout.edp(), edp) << where;
              const Reference ref = BuildReference(world, tp, cp, dp, pp, etp, ep, edp);
              for (int r = 0; r < world; ++r) {
                const RankCoordinates c = layout.Coordinates(r);
                EXPECT_EQ((std::array<int, 4>{c.tp, c.cp, c.dp, c.pp}), ref.dense[r]) << where;
                EXPECT_EQ((std::array<int, 4>{c.etp, c.ep, c.edp, c.pp}), ref.expert[r]) << where;
                EXPECT_EQ(layout.RankOf(c), r) << where;
                EXPECT_EQ(layout.ExpertRankOf(c), r) << where;
                // Pipeline neighbours differ only in pp, one step around the ring.
                RankCoordinates next = c;
                next.pp = (c.pp + 1) % pp;
                EXPECT_EQ(layout.PipelineNextRank(r), layout.RankOf(next)) << where;
                EXPECT_EQ(layout.PipelinePrevRank(layout.PipelineNextRank(r)), r) << where;
                EXPECT_EQ(layout.IsPipelineFirstStage(r), c.pp == 0) << where;
                EXPECT_EQ(layout.IsPipelineLastStage(r), c.pp == pp - 1) << where;
                // Embedding groups: first and last stage of the rank's pipeline (just the rank at PP 1).
                absl::StatusOr<GroupMembership> emb = layout.GroupOf(GroupKind::kEmbedding, r);
                const bool end_stage = c.pp == 0 || c.pp == pp - 1;
                ASSERT_EQ(emb.ok(), end_stage) << where;
                if (end_stage) {
                  std::vector<int> expected = {layout.PipelineFirstRank(r)};
                  if (pp > 1) expected.push_back(layout.PipelineLastRank(r));
                  EXPECT_EQ(emb->ranks, expected) << where;
                }
                absl::StatusOr<GroupMembership> pos = layout.GroupOf(GroupKind::kPositionEmbedding, r);
                ASSERT_EQ(pos.ok(), c.pp == 0) << where;
              }
              EXPECT_EQ(layout.EmbeddingGroups().size(), layout.PipelineParallelGroups().size()) << where;
              for (const KindSpec& spec : specs) CheckKind(layout, ref, spec, where);
              ++configs;
            }
  }
  EXPECT_GT(configs, 300);
}

}  // namespace
}  // namespace megatron::parallel_state
