#include "megatron/core/distributed/multi_process_testing.h"

#include <cstdio>

#include "gtest/gtest.h"
#include "megatron/core/distributed/launch_env.h"
#include "megatron/core/distributed/spawn.h"

namespace megatron::distributed {
namespace {

// Whether a gtest assertion failed after `first_part` in the current test (in this process).
bool NewFailureSince(int first_part) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return false;
  const ::testing::TestResult* result = info->result();
  for (int i = first_part; i < result->total_part_count(); ++i) {
    if (result->GetTestPartResult(i).failed()) return true;
  }
  return false;
}

int CurrentPartCount() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info == nullptr ? 0 : info->result()->total_part_count();
}

absl::Status Run(int world_size, const std::function<int(int rank)>& child, const MultiProcessOptions& options,
                 bool expect_failure) {
  SpawnOptions spawn;
  spawn.timeout = options.job_timeout;
  spawn.stop_all_on_failure = options.stop_all_on_failure;
  absl::Status status = ForkAndSupervise(world_size, child, spawn);
  if (!expect_failure && !status.ok()) ADD_FAILURE() << "multi-process job failed: " << status;
  return status;
}

}  // namespace

void RunMultiProcessWithEnv(int world_size, const std::function<void(int rank, int world)>& body,
                            const MultiProcessOptions& options) {
  const int parts_before = CurrentPartCount();
  (void)Run(
      world_size,
      [&](int rank) {
        body(rank, world_size);
        return NewFailureSince(parts_before) ? 1 : 0;
      },
      options, /*expect_failure=*/false);
}

namespace {

absl::Status RunWithContext(int world_size, const std::function<void(DistributedContext& ctx)>& body,
                            const MultiProcessOptions& options, bool expect_failure) {
  const int parts_before = CurrentPartCount();
  return Run(
      world_size,
      [&](int rank) {
        absl::StatusOr<LaunchEnv> env = LaunchEnv::FromEnvironment();
        if (!env.ok()) {
          std::fprintf(stderr, "rank %d: %s\n", rank, std::string(env.status().message()).c_str());
          return 2;
        }
        absl::StatusOr<std::shared_ptr<DistributedContext>> ctx =
            InitDistributed(*env, options.backend, options.collective_timeout);
        if (!ctx.ok()) {
          std::fprintf(stderr, "%s\n", std::string(ctx.status().message()).c_str());
          return 2;
        }
        body(**ctx);
        const int code = NewFailureSince(parts_before) ? 1 : 0;
        // Rank 0 serves the store: leaving before the others are done with it (e.g. still building a
        // subgroup rank 0 is not in) would break them. The result is ignored: after a deliberate failure
        // it fails fast (a peer is gone) or within the collective timeout.
        (void)(*ctx)->world().Barrier();
        // Keep the context alive past _exit: destroying a Gloo group whose peers already left can block
        // until its timeout, and the process is about to end anyway.
        new std::shared_ptr<DistributedContext>(*ctx);
        return code;
      },
      options, expect_failure);
}

}  // namespace

void RunMultiProcess(int world_size, const std::function<void(DistributedContext& ctx)>& body,
                     const MultiProcessOptions& options) {
  (void)RunWithContext(world_size, body, options, /*expect_failure=*/false);
}

absl::Status RunMultiProcessAllowingFailure(int world_size, const std::function<void(DistributedContext& ctx)>& body,
                                            const MultiProcessOptions& options) {
  return RunWithContext(world_size, body, options, /*expect_failure=*/true);
}

}  // namespace megatron::distributed
