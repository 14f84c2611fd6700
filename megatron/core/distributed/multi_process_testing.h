// gtest helpers for multi-process tests: fork one process per rank, give each a Gloo context over 127.0.0.1,
// run the body, and fail the calling test if any rank failed.
//
//   TEST(AllReduce, Sums) {
//     RunMultiProcess(4, [](DistributedContext& ctx) {
//       at::Tensor t = at::full({3}, ctx.rank(), at::kDouble);
//       ASSERT_TRUE(ctx.world().AllReduce(t).ok());
//       EXPECT_EQ(t[0].item<double>(), 6);
//     });
//   }
//
// Each child is a fork of the test binary (no exec): EXPECT/ASSERT failures inside the body are recorded in
// the child's copy of gtest and turned into its exit status (0 passed, 1 failed); the child's output appears
// in the test log prefixed with "[rank N]". The parent adds a gtest failure naming the failed rank(s).
// Forking is safe here as long as the parent test has not started libtorch's thread pools before the call
// (keep tensor work inside the body).
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "megatron/core/distributed/process_group.h"

namespace megatron::distributed {

struct MultiProcessOptions {
  absl::Duration collective_timeout = absl::Seconds(10);  // the context's timeout
  absl::Duration job_timeout = absl::Seconds(60);         // whole job; the ranks are killed after it
  // See SpawnOptions::stop_all_on_failure; false for tests where a rank is meant to die.
  bool stop_all_on_failure = true;
  // The contexts' backend: kNccl for GPU tests (the body selects its GPU before the first CUDA collective).
  Backend backend = Backend::kGloo;
};

// Runs body(ctx) on world_size forked ranks, each with its own Gloo DistributedContext, and records a gtest
// failure naming the failed rank(s) if any rank failed.
void RunMultiProcess(int world_size, const std::function<void(DistributedContext& ctx)>& body,
                     const MultiProcessOptions& options = {});

// Same, without a context: the body sees RANK/WORLD_SIZE/MASTER_* in its environment and may call
// InitDistributed itself (tests of rendezvous).
void RunMultiProcessWithEnv(int world_size, const std::function<void(int rank, int world)>& body,
                            const MultiProcessOptions& options = {});

// RunMultiProcess for tests where a rank is meant to fail: returns the job's status (Aborted naming the
// failed ranks, e.g. "rank 2 was killed by signal 6 (Aborted)") instead of recording a gtest failure.
absl::Status RunMultiProcessAllowingFailure(int world_size, const std::function<void(DistributedContext& ctx)>& body,
                                            const MultiProcessOptions& options = {});

}  // namespace megatron::distributed
