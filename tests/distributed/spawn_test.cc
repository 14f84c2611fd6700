// SpawnLocal: torchrun variables, "[rank N]" output prefixes, failure and timeout reports naming the rank.
#include "megatron/core/distributed/spawn.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace megatron::distributed {
namespace {

struct Captured {
  std::mutex mu;
  std::vector<std::string> lines;
  bool Has(const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  }
};

SpawnOptions Capture(Captured& out, absl::Duration timeout = absl::Seconds(20)) {
  SpawnOptions options;
  options.timeout = timeout;
  options.output = [&out](const std::string& line) {
    std::lock_guard<std::mutex> lock(out.mu);
    out.lines.push_back(line);
  };
  return options;
}

absl::Status Sh(int nproc, const std::string& script, const SpawnOptions& options) {
  return SpawnLocal(nproc, {"/bin/sh", "-c", script}, options);
}

TEST(SpawnLocal, SetsTorchrunVariablesAndPrefixesOutput) {
  Captured out;
  SpawnOptions options = Capture(out);
  options.master_port = 23456;
  options.env = {{"EXTRA", "x"}};
  absl::Status s = Sh(3,
                      "echo $RANK/$WORLD_SIZE $LOCAL_RANK/$LOCAL_WORLD_SIZE $MASTER_ADDR:$MASTER_PORT $EXTRA; "
                      "echo to-stderr >&2; printf no-newline",
                      options);
  ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < 3; ++r) {
    const std::string p = "[rank " + std::to_string(r) + "] ";
    EXPECT_TRUE(out.Has(p + std::to_string(r) + "/3 " + std::to_string(r) + "/3 127.0.0.1:23456 x")) << r;
    EXPECT_TRUE(out.Has(p + "to-stderr"));
    EXPECT_TRUE(out.Has(p + "no-newline"));
  }
}

TEST(SpawnLocal, ReportsNonZeroExitWithRankAndStopsTheOthers) {
  Captured out;
  const absl::Time start = absl::Now();
  absl::Status s = Sh(3, "if [ $RANK = 1 ]; then echo failing; exit 3; fi; exec sleep 30", Capture(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(std::string(s.message()), "rank 1 exited with status 3 (stopped rank(s) 0,2)");
  EXPECT_TRUE(out.Has("[rank 1] failing"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(SpawnLocal, ReportsDeathBySignal) {
  Captured out;
  absl::Status s = Sh(2, "if [ $RANK = 0 ]; then kill -9 $$; fi; exec sleep 30", Capture(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(std::string(s.message()), "rank 0 was killed by signal 9 (Killed) (stopped rank(s) 1)");
}

TEST(SpawnLocal, KeepsGoingWhenAskedAndListsEveryFailure) {
  Captured out;
  SpawnOptions options = Capture(out);
  options.stop_all_on_failure = false;
  absl::Status s = Sh(3, "sleep 0.$RANK; exit $RANK", options);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(std::string(s.message()), "rank 1 exited with status 1; rank 2 exited with status 2");
}

TEST(SpawnLocal, Timeout) {
  Captured out;
  const absl::Time start = absl::Now();
  absl::Status s = Sh(2, "exec sleep 30", Capture(out, absl::Milliseconds(500)));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(std::string(s.message()), "ranks still running after 500ms (stopped rank(s) 0,1)");
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

TEST(SpawnLocal, MissingProgram) {
  Captured out;
  absl::Status s = SpawnLocal(1, {"/nonexistent/program"}, Capture(out));
  EXPECT_EQ(std::string(s.message()), "rank 0 exited with status 127");
  EXPECT_TRUE(out.Has("[rank 0] cannot execute '/nonexistent/program'"));
}

TEST(SpawnLocal, BadArguments) {
  EXPECT_EQ(SpawnLocal(0, {"true"}, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SpawnLocal(2, {}, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpawnLocal, RunsATorchrunStyleProgram) {
  Captured out;
  absl::Status s = SpawnLocal(3, {"tests/distributed/allreduce_worker"}, Capture(out));
  ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < 3; ++r) {
    bool found = false;
    std::lock_guard<std::mutex> lock(out.mu);
    for (const std::string& line : out.lines) {
      found |= line.rfind("[rank " + std::to_string(r) + "] rank " + std::to_string(r) + "/3", 0) == 0 &&
               line.find("sum 6") != std::string::npos;
    }
    EXPECT_TRUE(found) << r;
  }
}

TEST(ForkAndSupervise, RunsAFunctionPerRank) {
  Captured out;
  absl::Status s = ForkAndSupervise(
      2, [](int rank) { return rank == 1 && std::getenv("RANK") == std::string("1") ? 5 : 0; }, Capture(out));
  EXPECT_EQ(std::string(s.message()), "rank 1 exited with status 5");
}

}  // namespace
}  // namespace megatron::distributed
