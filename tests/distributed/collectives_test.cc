// Collectives over Gloo with 2 and 4 forked ranks on 127.0.0.1: results equal the reduction computed locally
// in float64; subgroups reduce independently; a dead or stuck rank yields an error naming the collective
// within the timeout instead of a hang.
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/distributed/process_group.h"

namespace megatron::distributed {
namespace {

constexpr int64_t kN = 12;  // divisible by 2 and 4 (reduce-scatter)

// Rank r's float32 input: sin((i + 1) * (r + 1)) + r; non-trivial values so that sums are not exact in fp32.
at::Tensor Input(int rank, at::ScalarType dtype = at::kFloat) {
  at::Tensor i = at::arange(kN, at::kDouble);
  return i.add(1).mul(rank + 1).sin().add(rank).to(dtype);
}

// The reductions computed locally in float64 from every rank's (fp32-rounded) input.
at::Tensor Expected(const std::vector<int>& ranks, ReduceOp op) {
  at::Tensor acc;
  for (int r : ranks) {
    at::Tensor x = Input(r).to(at::kDouble);
    if (!acc.defined()) {
      acc = x;
    } else if (op == ReduceOp::kMax) {
      acc = acc.maximum(x);
    } else if (op == ReduceOp::kMin) {
      acc = acc.minimum(x);
    } else {
      acc = acc.add(x);
    }
  }
  if (op == ReduceOp::kAvg) acc = acc.div(static_cast<double>(ranks.size()));
  return acc;
}

void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double err = actual.to(at::kDouble).sub(expected).abs().max().item().toDouble();
  EXPECT_LT(err, 1e-5) << what << ": max abs error " << err;
}

std::vector<int> Iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

void AllCollectives(DistributedContext& ctx) {
  const int rank = ctx.rank();
  const int world = ctx.world_size();
  Group& g = ctx.world();
  ASSERT_EQ(g.rank(), rank);
  ASSERT_EQ(g.size(), world);
  const std::vector<int> all = Iota(world);

  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
    at::Tensor t = Input(rank);
    ASSERT_TRUE(g.AllReduce(t, op).ok());
    ExpectClose(t, Expected(all, op), std::string("all_reduce ") + ReduceOpName(op));
  }

  absl::StatusOr<std::vector<at::Tensor>> parts = g.AllGather(Input(rank));
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) ExpectClose((*parts)[r], Input(r).to(at::kDouble), "all_gather part");

  absl::StatusOr<at::Tensor> concat = g.AllGatherConcat(Input(rank).view({3, 4}));
  ASSERT_TRUE(concat.ok()) << concat.status();
  ASSERT_EQ(concat->sizes(), (std::vector<int64_t>{3 * world, 4}));
  for (int r = 0; r < world; ++r) {
    ExpectClose(concat->narrow(0, 3 * r, 3), Input(r).to(at::kDouble).view({3, 4}), "all_gather concat");
  }

  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    absl::StatusOr<at::Tensor> shard = g.ReduceScatter(Input(rank), op);
    ASSERT_TRUE(shard.ok()) << shard.status();
    const int64_t chunk = kN / world;
    ExpectClose(*shard, Expected(all, op).narrow(0, chunk * rank, chunk), "reduce_scatter");
  }
  absl::Status bad = g.ReduceScatter(at::zeros({kN + 1}), ReduceOp::kSum).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.message()).find("input.size(0)=13 is not divisible by the group size"), std::string::npos)
      << bad;

  for (int root : {0, world - 1}) {
    at::Tensor t = Input(rank, at::kDouble);
    ASSERT_TRUE(g.Broadcast(t, root).ok());
    ExpectClose(t, Input(root, at::kDouble), "broadcast");
  }

  // Ring exchange: even ranks send first, odd ranks receive first.
  const int next = (rank + 1) % world;
  const int prev = (rank + world - 1) % world;
  at::Tensor received = at::zeros({kN});
  if (rank % 2 == 0) {
    ASSERT_TRUE(g.Send(Input(rank), next).ok());
    ASSERT_TRUE(g.Recv(received, prev).ok());
  } else {
    ASSERT_TRUE(g.Recv(received, prev).ok());
    ASSERT_TRUE(g.Send(Input(rank), next).ok());
  }
  ExpectClose(received, Input(prev).to(at::kDouble), "recv");
  EXPECT_EQ(g.Send(Input(rank), world).code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(g.Barrier().ok());
}

TEST(Collectives, TwoRanks) { RunMultiProcess(2, AllCollectives); }

TEST(Collectives, FourRanks) { RunMultiProcess(4, AllCollectives); }

TEST(Collectives, SubgroupsReduceIndependently) {
  RunMultiProcess(4, [](DistributedContext& ctx) {
    // Collective creation: every rank, same order, members or not.
    auto even = ctx.NewGroup({0, 2}, "even");
    auto odd = ctx.NewGroup({1, 3}, "odd");
    ASSERT_TRUE(even.ok()) << even.status();
    ASSERT_TRUE(odd.ok()) << odd.status();
    const bool is_even = ctx.rank() % 2 == 0;
    EXPECT_EQ(*even != nullptr, is_even);
    EXPECT_EQ(*odd != nullptr, !is_even);
    Group& mine = is_even ? **even : **odd;
    EXPECT_EQ(mine.name(), is_even ? "even[0,2]" : "odd[1,3]");
    EXPECT_EQ(mine.rank(), ctx.rank() / 2);
    const std::vector<int> members = is_even ? std::vector<int>{0, 2} : std::vector<int>{1, 3};
    EXPECT_EQ(mine.ranks(), members);
    at::Tensor t = Input(ctx.rank());
    ASSERT_TRUE(mine.AllReduce(t).ok());
    ExpectClose(t, Expected(members, ReduceOp::kSum), "subgroup all_reduce");
    absl::StatusOr<at::Tensor> gathered = mine.AllGatherConcat(Input(ctx.rank()));
    ASSERT_TRUE(gathered.ok());
    ExpectClose(gathered->narrow(0, kN, kN), Input(members[1]).to(at::kDouble), "subgroup all_gather");

    // A group in reversed order: group rank 0 is global rank 3.
    auto reversed = ctx.NewGroup({3, 2, 1, 0}, "rev");
    ASSERT_TRUE(reversed.ok());
    EXPECT_EQ((*reversed)->rank(), 3 - ctx.rank());
    at::Tensor b = Input(ctx.rank());
    ASSERT_TRUE((*reversed)->Broadcast(b, 0).ok());
    ExpectClose(b, Input(3).to(at::kDouble), "broadcast from group rank 0 = global rank 3");

    // Bad rank lists fail the same way on every rank, before any communication.
    auto bad = ctx.NewGroup({0, 4});
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(bad.status().message()).find("ranks contains 4, outside [0, 4)"), std::string::npos)
        << bad.status();
    EXPECT_EQ(ctx.NewGroup({1, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  });
}

TEST(Collectives, DeadRankIsAnErrorNotAHang) {
  MultiProcessOptions options;
  options.collective_timeout = absl::Seconds(5);
  options.stop_all_on_failure = false;  // the survivors must get to see the failure
  absl::Status job = RunMultiProcessAllowingFailure(
      3,
      [](DistributedContext& ctx) {
        if (ctx.rank() == 2) {
          const rlimit no_core{0, 0};
          setrlimit(RLIMIT_CORE, &no_core);
          std::abort();
        }
        const absl::Time start = absl::Now();
        at::Tensor t = Input(ctx.rank());
        absl::Status s = ctx.world().AllReduce(t);
        const absl::Duration took = absl::Now() - start;
        ASSERT_FALSE(s.ok());
        const std::string prefix = "rank " + std::to_string(ctx.rank()) + ": all_reduce on group world[0,1,2]";
        EXPECT_EQ(std::string(s.message()).rfind(prefix, 0), 0u) << s;
        EXPECT_LT(took, absl::Seconds(7)) << s;
        std::printf("survivor saw: %s (after %s)\n", std::string(s.message()).c_str(),
                    absl::FormatDuration(took).c_str());
      },
      options);
  EXPECT_EQ(job.code(), absl::StatusCode::kAborted) << job;
  // Only the aborted rank failed: the survivors' expectations held.
  EXPECT_EQ(std::string(job.message()), "rank 2 was killed by signal 6 (Aborted)");
}

TEST(Collectives, StuckRankTimesOutWithTheConfiguredTimeout) {
  MultiProcessOptions options;
  options.collective_timeout = absl::Seconds(1);
  RunMultiProcess(
      2,
      [](DistributedContext& ctx) {
        if (ctx.rank() == 1) {
          absl::SleepFor(absl::Milliseconds(2500));  // alive, but never joins the all-reduce
          return;
        }
        const absl::Time start = absl::Now();
        at::Tensor t = Input(0);
        absl::Status s = ctx.world().AllReduce(t);
        const absl::Duration took = absl::Now() - start;
        EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
        EXPECT_EQ(std::string(s.message())
                      .rfind("rank 0: all_reduce on group world[0,1] timed out after 1s "
                             "(is a rank dead?)",
                             0),
                  0u)
            << s;
        EXPECT_GE(took, absl::Milliseconds(900));
        EXPECT_LT(took, absl::Seconds(2));
      },
      options);
}

TEST(InitDistributed, Errors) {
  LaunchEnv env;
  EXPECT_EQ(InitDistributed(env, Backend::kNccl, absl::Seconds(1)).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(InitDistributed(env, Backend::kGloo, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(InitDistributed, MissingRankTimesOut) {
  MultiProcessOptions options;
  RunMultiProcessWithEnv(
      2,
      [](int rank, int) {
        if (rank == 1) return;  // never shows up
        absl::StatusOr<LaunchEnv> env = LaunchEnv::FromEnvironment();
        ASSERT_TRUE(env.ok());
        const absl::Time start = absl::Now();
        auto ctx = InitDistributed(*env, Backend::kGloo, absl::Seconds(1));
        EXPECT_FALSE(ctx.ok());
        EXPECT_LT(absl::Now() - start, absl::Seconds(4));
        std::printf("rank 0 alone: %s\n", std::string(ctx.status().message()).c_str());
        EXPECT_NE(std::string(ctx.status().message()).find("rank 0: rendezvous at 127.0.0.1:"), std::string::npos)
            << ctx.status();
      },
      options);
}

}  // namespace
}  // namespace megatron::distributed
