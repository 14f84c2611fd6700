// Context-parallel arithmetic against Megatron: get_padding's cases (research notes §1.8, checked case by case
// with the values its formula gives) and the zigzag assignment of get_batch_on_this_cp_rank (each rank holds
// chunks r and 2CP-1-r; together the ranks cover every position once; causal work is balanced).
#include "megatron/core/parallel_state/context_parallel.h"

#include <algorithm>
#include <numeric>

#include "gtest/gtest.h"

namespace megatron::parallel_state {
namespace {

int64_t Padding(int64_t s, PaddingOptions o) {
  absl::StatusOr<int64_t> p = ContextParallelPadding(s, o);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : -1;
}

TEST(ContextParallelPadding, MegatronCases) {
  // SP and CP: factor tp*cp*2 = 16 for TP=4, CP=2.
  EXPECT_EQ(Padding(1000, {.cp = 2, .tp = 4, .sequence_parallel = true}), 8);
  EXPECT_EQ(Padding(1008, {.cp = 2, .tp = 4, .sequence_parallel = true}), 0);
  // CP only: factor cp*2 = 8.
  EXPECT_EQ(Padding(1001, {.cp = 4, .tp = 8}), 7);
  // SP only: factor tp.
  EXPECT_EQ(Padding(577, {.cp = 1, .tp = 8, .sequence_parallel = true}), 7);
  // FP8: 16, or 32 for MXFP8; CP and SP take precedence.
  EXPECT_EQ(Padding(577, {.fp8 = true}), 15);
  EXPECT_EQ(Padding(577, {.fp8 = true, .mxfp8 = true}), 31);
  EXPECT_EQ(Padding(577, {.cp = 2, .fp8 = true, .mxfp8 = true}), 3);
  // None: no padding.
  EXPECT_EQ(Padding(577, {}), 0);
  // SP with decoder TP comm overlap: up to the decoder's fixed length.
  EXPECT_EQ(Padding(1500, {.tp = 2, .sequence_parallel = true, .decoder_tp_comm_overlap = true,
                           .decoder_seq_len = 2048}),
            548);
  EXPECT_FALSE(ContextParallelPadding(3000, {.tp = 2, .sequence_parallel = true, .decoder_tp_comm_overlap = true,
                                             .decoder_seq_len = 2048})
                   .ok());
  EXPECT_FALSE(ContextParallelPadding(-1, {}).ok());
  EXPECT_FALSE(ContextParallelPadding(8, {.cp = 0}).ok());
}

TEST(ContextParallelPadding, PaddedLengthsSplitEvenly) {
  for (int cp : {1, 2, 4}) {
    for (int tp : {1, 2, 4, 8}) {
      for (bool sp : {false, true}) {
        for (int64_t s = 0; s < 200; ++s) {
          const int64_t padded = s + Padding(s, {.cp = cp, .tp = tp, .sequence_parallel = sp});
          if (cp > 1) {
            EXPECT_EQ(padded % (2 * cp), 0) << s;
          }
          if (sp) {
            EXPECT_EQ((padded / cp) % tp, 0) << s;
          }
          EXPECT_LT(padded - s, std::max<int64_t>(1, (sp ? tp : 1) * (cp > 1 ? 2 * cp : 1))) << s;
        }
      }
    }
  }
}

TEST(ZigzagPositions, MegatronsChunkAssignment) {
  EXPECT_EQ(ZigzagPositions(8, 2, 0), (std::vector<int64_t>{0, 1, 6, 7}));
  EXPECT_EQ(ZigzagPositions(8, 2, 1), (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(ZigzagPositions(8, 1, 0), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  for (int cp : {1, 2, 3, 4, 8}) {
    const int64_t s = 2 * cp * 3;
    std::vector<int64_t> all;
    int64_t work0 = -1;
    for (int r = 0; r < cp; ++r) {
      std::vector<int64_t> pos = ZigzagPositions(s, cp, r);
      ASSERT_EQ(pos.size(), static_cast<size_t>(s / cp));
      all.insert(all.end(), pos.begin(), pos.end());
      // Causal work: the number of keys each query sees, summed: equal on every rank.
      const int64_t work = std::accumulate(pos.begin(), pos.end(), int64_t{0}) + static_cast<int64_t>(pos.size());
      if (r == 0) work0 = work;
      EXPECT_EQ(work, work0) << "CP=" << cp << " rank " << r;
    }
    std::sort(all.begin(), all.end());
    for (int64_t i = 0; i < s; ++i) EXPECT_EQ(all[i], i) << "CP=" << cp;
  }
}

}  // namespace
}  // namespace megatron::parallel_state
