#include "megatron/core/parallel_state/layer_assignment.h"

#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace megatron::parallel_state {
namespace {

std::string ErrorOf(const absl::StatusOr<LayerAssignment>& a) {
  EXPECT_FALSE(a.ok());
  return a.ok() ? "" : std::string(a.status().message());
}

// initialize_model_parallel's docstring: TP 1, PP 4, VP 2, 16 layers (1-based there):
// GPU 0: [1, 2] [9, 10]; GPU 1: [3, 4] [11, 12]; GPU 2: [5, 6] [13, 14]; GPU 3: [7, 8] [15, 16].
TEST(LayerAssignmentTest, MegatronInterleavedDocstringExample) {
  absl::StatusOr<LayerAssignment> a = LayerAssignment::Even(16, 4, 2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->LayersOf(0), (std::vector<int>{0, 1, 8, 9}));
  EXPECT_EQ(a->LayersOf(1), (std::vector<int>{2, 3, 10, 11}));
  EXPECT_EQ(a->LayersOf(2), (std::vector<int>{4, 5, 12, 13}));
  EXPECT_EQ(a->LayersOf(3), (std::vector<int>{6, 7, 14, 15}));
  EXPECT_EQ(a->Chunk(1, 1), (LayerRange{10, 12}));
}

TEST(LayerAssignmentTest, EightLayersTwoStagesTwoChunks) {
  absl::StatusOr<LayerAssignment> a = LayerAssignment::Even(8, 2, 2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Chunk(0, 0), (LayerRange{0, 2}));
  EXPECT_EQ(a->Chunk(0, 1), (LayerRange{4, 6}));
  EXPECT_EQ(a->Chunk(1, 0), (LayerRange{2, 4}));
  EXPECT_EQ(a->Chunk(1, 1), (LayerRange{6, 8}));
  EXPECT_EQ(*a->OwnerOf(5), std::make_pair(0, 1));
  EXPECT_EQ(*a->OwnerOf(3), std::make_pair(1, 0));
  EXPECT_FALSE(a->OwnerOf(8).ok());
}

// Every layer owned exactly once, chunks contiguous, and the offsets equal Megatron's
// get_transformer_layer_offset: v * (L / vp) + r * (L / pp / vp) (or r * L / pp without VP).
TEST(LayerAssignmentTest, EvenExhaustive) {
  int cases = 0;
  for (int layers = 1; layers <= 24; ++layers)
    for (int pp = 1; pp <= layers; ++pp)
      for (int vp = 1; vp <= layers; ++vp) {
        if (vp > 1 && pp == 1) continue;
        absl::StatusOr<LayerAssignment> a = LayerAssignment::Even(layers, pp, vp);
        if (layers % (pp * vp) != 0) {
          EXPECT_FALSE(a.ok());
          continue;
        }
        ASSERT_TRUE(a.ok()) << a.status();
        std::vector<int> owned(layers, 0);
        for (int r = 0; r < pp; ++r) {
          for (int v = 0; v < vp; ++v) {
            const int per_rank = layers / pp;
            const int megatron_offset = vp > 1 ? v * (layers / vp) + r * (per_rank / vp) : r * per_rank;
            EXPECT_EQ(a->Offset(r, v), megatron_offset) << layers << " " << pp << " " << vp;
            EXPECT_EQ(a->NumLayersToBuild(r, v), layers / (pp * vp));
            const LayerRange range = a->Chunk(r, v);
            for (int l = range.begin; l < range.end; ++l) {
              ++owned[l];
              EXPECT_EQ(*a->OwnerOf(l), std::make_pair(r, v));
            }
          }
        }
        for (int l = 0; l < layers; ++l) EXPECT_EQ(owned[l], 1) << layers << " " << pp << " " << vp;
        ++cases;
      }
  EXPECT_GT(cases, 100);
}

TEST(LayerAssignmentTest, NotDivisibleSuggestsExplicitLayout) {
  // Megatron issue #468: 80 layers, PP 16, VP 2 silently ran 64 layers.
  const std::string message = ErrorOf(LayerAssignment::Even(80, 16, 2));
  EXPECT_NE(message.find("num_layers: 80"), std::string::npos) << message;
  EXPECT_NE(message.find("explicit layout"), std::string::npos) << message;
  EXPECT_NE(ErrorOf(LayerAssignment::Even(8, 1, 2)).find("virtual_pipeline_model_parallel_size"),
            std::string::npos);
  EXPECT_NE(ErrorOf(LayerAssignment::Even(0, 1, 1)).find("num_layers: 0"), std::string::npos);
}

TEST(LayerAssignmentTest, StageCounts) {
  absl::StatusOr<LayerAssignment> a = LayerAssignment::FromStageCounts(8, 2, 1, {3, 5});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Chunk(0), (LayerRange{0, 3}));
  EXPECT_EQ(a->Chunk(1), (LayerRange{3, 8}));

  // With VP each stage's count is split evenly over its chunks, in model (round-robin) order.
  a = LayerAssignment::FromStageCounts(12, 2, 2, {4, 8});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->LayersOf(0), (std::vector<int>{0, 1, 6, 7}));
  EXPECT_EQ(a->LayersOf(1), (std::vector<int>{2, 3, 4, 5, 8, 9, 10, 11}));

  std::string message = ErrorOf(LayerAssignment::FromStageCounts(8, 2, 1, {3, 4}));
  EXPECT_NE(message.find("layers_per_stage: {3, 4} sums to 7, not num_layers 8"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FromStageCounts(8, 2, 1, {8}));
  EXPECT_NE(message.find("layers_per_stage: has 1 entries"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FromStageCounts(8, 2, 2, {3, 5}));
  EXPECT_NE(message.find("layers_per_stage[0]: 3 is not divisible"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FromStageCounts(8, 2, 1, {-1, 9}));
  EXPECT_NE(message.find("layers_per_stage[0]: -1"), std::string::npos) << message;
}

TEST(LayerAssignmentTest, ChunkCounts) {
  // Index v * pp + r: chunk (0,0)=1, (0,1)=2, (1,0)=3, (1,1)=1.
  absl::StatusOr<LayerAssignment> a = LayerAssignment::FromChunkCounts(7, 2, 2, {1, 2, 3, 1});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Chunk(0, 0), (LayerRange{0, 1}));
  EXPECT_EQ(a->Chunk(1, 0), (LayerRange{1, 3}));
  EXPECT_EQ(a->Chunk(0, 1), (LayerRange{3, 6}));
  EXPECT_EQ(a->Chunk(1, 1), (LayerRange{6, 7}));
  std::string message = ErrorOf(LayerAssignment::FromChunkCounts(7, 2, 2, {1, 2, 3}));
  EXPECT_NE(message.find("layers_per_chunk: has 3 entries"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FromChunkCounts(7, 2, 2, {1, 2, 3, 2}));
  EXPECT_NE(message.find("sums to 8, not num_layers 7"), std::string::npos) << message;
}

// Megatron's get_transformer_layer_offset for --decoder-first/last-pipeline-num-layers without VP:
// rank 0 -> 0; else (middle rank) * (middle layers / middle stages) + first, where the middle rank is
// r - 1 when the first stage count is given, r otherwise.
int MegatronUnevenOffset(int layers, int pp, std::optional<int> first, std::optional<int> last, int r) {
  const int middle_stages = pp - (first ? 1 : 0) - (last ? 1 : 0);
  const int f = first.value_or(0), l = last.value_or(0);
  const int per = middle_stages > 0 ? (layers - f - l) / middle_stages : 0;
  const int middle_rank = first ? r - 1 : r;
  return r == 0 ? 0 : middle_rank * per + f;
}

// The same with VP (Megatron's interleaved uneven branch), for the first count given and the last
// optional: rank 0 -> v * T; else v * T + first/vp + (r - 1) * (middle/vp / middle stages),
// T = first/vp + middle/vp + last/vp.
int MegatronUnevenVpOffset(int layers, int pp, int vp, int first, std::optional<int> last, int r, int v) {
  const int l = last.value_or(0);
  const int middle = layers - first - l;
  const int middle_stages = pp - 1 - (last ? 1 : 0);
  const int total = first / vp + middle / vp + l / vp;
  if (r == 0) return v * total;
  return v * total + first / vp + (r - 1) * ((middle / vp) / middle_stages);
}

TEST(LayerAssignmentTest, FirstLastStageMatchesMegatronOffsets) {
  int cases = 0;
  for (int layers = 1; layers <= 24; ++layers)
    for (int pp = 2; pp <= 6; ++pp)
      for (int first = -1; first <= layers; ++first)
        for (int last = -1; last <= layers; ++last) {
          std::optional<int> f = first >= 0 ? std::optional<int>(first) : std::nullopt;
          std::optional<int> l = last >= 0 ? std::optional<int>(last) : std::nullopt;
          absl::StatusOr<LayerAssignment> a = LayerAssignment::FirstLastStage(layers, pp, 1, f, l);
          if (!a.ok()) continue;
          for (int r = 0; r < pp; ++r) {
            EXPECT_EQ(a->Offset(r), MegatronUnevenOffset(layers, pp, f, l, r))
                << layers << " pp " << pp << " first " << first << " last " << last << " r " << r;
          }
          if (f) {
            EXPECT_EQ(a->NumLayersToBuild(0), *f);
          }
          if (l) {
            EXPECT_EQ(a->NumLayersToBuild(pp - 1), *l);
          }
          ++cases;
        }
  EXPECT_GT(cases, 200);

  cases = 0;
  for (int layers = 1; layers <= 24; ++layers)
    for (int pp = 3; pp <= 6; ++pp)
      for (int vp = 2; vp <= 4; ++vp)
        for (int first = 0; first <= layers; ++first)
          for (int last = -1; last <= layers; ++last) {
            std::optional<int> l = last >= 0 ? std::optional<int>(last) : std::nullopt;
            absl::StatusOr<LayerAssignment> a = LayerAssignment::FirstLastStage(layers, pp, vp, first, l);
            if (!a.ok()) continue;
            std::vector<int> owned(layers, 0);
            for (int r = 0; r < pp; ++r)
              for (int v = 0; v < vp; ++v) {
                EXPECT_EQ(a->Offset(r, v), MegatronUnevenVpOffset(layers, pp, vp, first, l, r, v))
                    << layers << " pp " << pp << " vp " << vp << " first " << first << " last " << last;
                for (int x = a->Chunk(r, v).begin; x < a->Chunk(r, v).end; ++x) ++owned[x];
              }
            for (int x = 0; x < layers; ++x) EXPECT_EQ(owned[x], 1);
            ++cases;
          }
  EXPECT_GT(cases, 50);
}

TEST(LayerAssignmentTest, FirstLastStageExamplesAndErrors) {
  absl::StatusOr<LayerAssignment> a = LayerAssignment::FirstLastStage(10, 4, 1, 1, 3);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Chunk(0), (LayerRange{0, 1}));
  EXPECT_EQ(a->Chunk(1), (LayerRange{1, 4}));
  EXPECT_EQ(a->Chunk(2), (LayerRange{4, 7}));
  EXPECT_EQ(a->Chunk(3), (LayerRange{7, 10}));
  a = LayerAssignment::FirstLastStage(10, 3, 1, std::nullopt, 2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Chunk(2), (LayerRange{8, 10}));

  std::string message = ErrorOf(LayerAssignment::FirstLastStage(10, 4, 1, 2, 3));
  EXPECT_NE(message.find("num_layers: the 5 layers left for the 2 middle pipeline stages"), std::string::npos)
      << message;
  message = ErrorOf(LayerAssignment::FirstLastStage(16, 4, 2, 3, 1));
  EXPECT_NE(message.find("decoder_first_pipeline_num_layers: 3"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FirstLastStage(15, 4, 2, 2, 1));
  EXPECT_NE(message.find("decoder_last_pipeline_num_layers: 1"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FirstLastStage(8, 2, 1, 3, 4));
  EXPECT_NE(message.find("must equal num_layers 8"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FirstLastStage(8, 1, 1, 3, std::nullopt));
  EXPECT_NE(message.find("pipeline_model_parallel_size > 1"), std::string::npos) << message;
  message = ErrorOf(LayerAssignment::FirstLastStage(8, 4, 1, 6, 6));
  EXPECT_NE(message.find("exceed num_layers 8"), std::string::npos) << message;
}

TEST(CheckDivisibilityTest, PadsVocabAndNamesFields) {
  ModelDims dims;
  dims.num_attention_heads = 32;
  dims.num_query_groups = 8;
  dims.ffn_hidden_size = 11008;
  dims.vocab_size = 50257;  // GPT-2
  dims.seq_length = 4096;
  absl::StatusOr<int> padded = CheckDivisibility(dims, 1);
  ASSERT_TRUE(padded.ok()) << padded.status();
  EXPECT_EQ(*padded, 50304);  // Megatron's well-known GPT-2 padding at TP 1
  padded = CheckDivisibility(dims, 2);
  ASSERT_TRUE(padded.ok()) << padded.status();
  EXPECT_EQ(*padded, 50432);  // multiple of 128 x 2
  EXPECT_EQ(PaddedVocabSize(256, 128, 2), 256);

  ModelDims bad = dims;
  bad.num_attention_heads = 12;
  EXPECT_NE(std::string(CheckDivisibility(bad, 8).status().message())
                .find("num_attention_heads: 12 is not divisible by tensor_model_parallel_size 8"),
            std::string::npos);
  bad = dims;
  EXPECT_NE(std::string(CheckDivisibility(bad, 16).status().message()).find("num_query_groups: 8"),
            std::string::npos);
  bad = dims;
  bad.ffn_hidden_size = 1001;
  EXPECT_NE(std::string(CheckDivisibility(bad, 8).status().message()).find("ffn_hidden_size: 1001"),
            std::string::npos);
  bad = dims;
  bad.seq_length = 4100;
  EXPECT_NE(std::string(CheckDivisibility(bad, 1, 4).status().message())
                .find("seq_length: 4100 is not divisible by 2 x context_parallel_size = 8"),
            std::string::npos);
  EXPECT_TRUE(CheckDivisibility(bad, 1, 2).ok());
  bad.sequence_parallel = true;
  bad.seq_length = 4100;
  EXPECT_NE(std::string(CheckDivisibility(bad, 8).status().message()).find("seq_length: 4100"), std::string::npos);
  bad = dims;
  bad.num_moe_experts = 6;
  EXPECT_NE(std::string(CheckDivisibility(bad, 1, 1, 4).status().message()).find("num_moe_experts: 6"),
            std::string::npos);
}

}  // namespace
}  // namespace megatron::parallel_state
