// SchedulePlan against Megatron's formulas (warm-up counts, the interleaved chunk/micro-batch order of
// get_model_chunk_id) and, exhaustively for PP <= 4, VP <= 3, M <= 8, against properties that make a pipeline
// correct: every (chunk, micro-batch) runs forward once and backward once after it; all ranks together finish
// (a simulation of the ring with non-blocking sends and blocking receives finds no deadlock, the failure mode
// behind Megatron's "PP hangs" reports); and 1F1B keeps at most warm-up + 1 activations alive.
#include "megatron/core/pipeline_parallel/schedule_plan.h"

#include <map>
#include <set>
#include <tuple>

#include "gtest/gtest.h"

namespace megatron::pipeline_parallel {
namespace {

using Kind = PipelineOp::Kind;

TEST(SchedulePlan, OneFOneBWarmupIsMegatrons) {
  // Megatron: num_warmup_microbatches = min(PP - rank - 1, M).
  EXPECT_EQ(NumWarmupForwards(4, 0, 1, 8), 3);
  EXPECT_EQ(NumWarmupForwards(4, 3, 1, 8), 0);
  EXPECT_EQ(NumWarmupForwards(4, 0, 1, 2), 2);
  auto plan = SchedulePlan(2, 0, 1, 3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::vector<PipelineOp> expected = {{Kind::kForward, 0, 0}, {Kind::kForward, 0, 1}, {Kind::kBackward, 0, 0},
                                            {Kind::kForward, 0, 2}, {Kind::kBackward, 0, 1}, {Kind::kBackward, 0, 2}};
  EXPECT_EQ(*plan, expected);
}

TEST(SchedulePlan, InterleavedOrderAndWarmupAreMegatrons) {
  // Megatron: warm-up = (PP - rank - 1) * 2 + (VP - 1) * PP; all forwards when M == PP.
  EXPECT_EQ(NumWarmupForwards(4, 0, 2, 8), 10);
  EXPECT_EQ(NumWarmupForwards(4, 3, 2, 8), 4);
  EXPECT_EQ(NumWarmupForwards(2, 1, 2, 2), 4);
  // get_model_chunk_id / microbatch id with group size PP = 2, VP = 2, M = 4: the forwards of the training plan.
  auto plan = SchedulePlan(2, 1, 2, 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<PipelineOp> forwards;
  for (const PipelineOp& op : *plan) {
    if (op.kind == Kind::kForward) forwards.push_back(op);
  }
  const std::vector<PipelineOp> expected = {{Kind::kForward, 0, 0}, {Kind::kForward, 0, 1}, {Kind::kForward, 1, 0},
                                            {Kind::kForward, 1, 1}, {Kind::kForward, 0, 2}, {Kind::kForward, 0, 3},
                                            {Kind::kForward, 1, 2}, {Kind::kForward, 1, 3}};
  EXPECT_EQ(forwards, expected);
  // Backwards run the chunks in reverse: rank 1 (warm-up 2) starts its steady state with F(c1,m0), B(c1,m0).
  plan = SchedulePlan(2, 1, 2, 4);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(ToString((*plan)[2]), "F(c1,m0)");
  EXPECT_EQ(ToString((*plan)[3]), "B(c1,m0)");
}

TEST(SchedulePlan, RejectsImpossibleArguments) {
  auto bad = SchedulePlan(4, 0, 2, 6);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("multiple of pipeline_model_parallel_size 4"), std::string::npos)
      << bad.status();
  EXPECT_TRUE(SchedulePlan(4, 0, 2, 6, /*forward_only=*/true).ok());  // evaluation takes any M
  EXPECT_FALSE(SchedulePlan(2, 2, 1, 4).ok());
  EXPECT_FALSE(SchedulePlan(2, 0, 1, 0).ok());
  EXPECT_FALSE(SchedulePlan(2, 0, 0, 4).ok());
}

// Runs every rank's plan against a model of the ring: a forward of chunk v on rank r needs the activation of
// (the previous chunk in model order, same micro-batch), a backward needs the gradient from the next chunk; sends
// never block. Returns false on deadlock.
bool Simulate(int pp, int vp, int m, bool forward_only, std::string* why) {
  std::vector<std::vector<PipelineOp>> plans(pp);
  for (int r = 0; r < pp; ++r) plans[r] = *SchedulePlan(pp, r, vp, m, forward_only);
  std::vector<size_t> next(pp, 0);
  // (kind, global chunk index in model order, micro-batch) of completed ops.
  std::set<std::tuple<int, int, int>> done;
  auto global = [&](int r, int chunk) { return chunk * pp + r; };
  const int num_global = pp * vp;
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      if (next[r] == plans[r].size()) continue;
      const PipelineOp& op = plans[r][next[r]];
      const int g = global(r, op.chunk);
      bool ready;
      if (op.kind == Kind::kForward) {
        ready = g == 0 || done.count({0, g - 1, op.microbatch}) > 0;
      } else {
        ready = done.count({0, g, op.microbatch}) > 0 &&
                (g == num_global - 1 || done.count({1, g + 1, op.microbatch}) > 0);
      }
      if (!ready) continue;
      done.insert({op.kind == Kind::kForward ? 0 : 1, g, op.microbatch});
      ++next[r];
      progress = true;
    }
  }
  for (int r = 0; r < pp; ++r) {
    if (next[r] != plans[r].size()) {
      *why = "rank " + std::to_string(r) + " stuck at " + ToString(plans[r][next[r]]);
      return false;
    }
  }
  return true;
}

TEST(SchedulePlan, ExhaustiveSmallPipelinesAreCompleteAndDeadlockFree) {
  int checked = 0;
  for (int pp = 1; pp <= 4; ++pp) {
    for (int vp = 1; vp <= 3; ++vp) {
      if (vp > 1 && pp == 1) continue;
      for (int m = 1; m <= 8; ++m) {
        if (vp > 1 && m % pp != 0) {
          std::string why;
          EXPECT_TRUE(Simulate(pp, vp, m, true, &why)) << "forward only: deadlock, " << why;
          continue;
        }
        const std::string where = "PP=" + std::to_string(pp) + " VP=" + std::to_string(vp) + " M=" + std::to_string(m);
        for (int r = 0; r < pp; ++r) {
          auto plan = SchedulePlan(pp, r, vp, m);
          ASSERT_TRUE(plan.ok()) << where << ": " << plan.status();
          ASSERT_EQ(plan->size(), 2u * m * vp) << where;
          std::map<std::pair<int, int>, int> seen;  // (chunk, mb) -> 1 after forward, 2 after backward
          int alive = 0, max_alive = 0;
          for (const PipelineOp& op : *plan) {
            int& state = seen[{op.chunk, op.microbatch}];
            if (op.kind == Kind::kForward) {
              ASSERT_EQ(state, 0) << where << " rank " << r << ": " << ToString(op) << " twice";
              state = 1;
              max_alive = std::max(max_alive, ++alive);
            } else {
              ASSERT_EQ(state, 1) << where << " rank " << r << ": " << ToString(op) << " without its forward";
              state = 2;
              --alive;
            }
          }
          ASSERT_EQ(seen.size(), static_cast<size_t>(m * vp)) << where;
          EXPECT_LE(max_alive, std::min(NumWarmupForwards(pp, r, vp, m) + 1, m * vp)) << where << " rank " << r;
          auto fwd = SchedulePlan(pp, r, vp, m, /*forward_only=*/true);
          ASSERT_TRUE(fwd.ok());
          EXPECT_EQ(fwd->size(), static_cast<size_t>(m * vp));
        }
        std::string why;
        EXPECT_TRUE(Simulate(pp, vp, m, false, &why)) << where << ": deadlock, " << why;
        EXPECT_TRUE(Simulate(pp, vp, m, true, &why)) << where << " forward only: deadlock, " << why;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 40);
}

}  // namespace
}  // namespace megatron::pipeline_parallel
