// Single-node launcher: run N ranks of a program (or of a function, in forked children) and supervise them.
//
//   SpawnLocal(4, {"bazel-bin/experiments/gpt/pretrain", "--recipe=..."}, absl::Hours(2));
//
// Each child gets torchrun's variables: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (= N), MASTER_ADDR
// (127.0.0.1) and MASTER_PORT (a free port picked by binding port 0), so LaunchEnv::FromEnvironment works
// unchanged. Each child's stdout and stderr are merged and every line is re-emitted as "[rank N] line".
//
// Failure handling is what makes multi-process jobs debuggable: the first child that exits non-zero or dies
// from a signal is reported by rank ("rank 2 exited with status 3", "rank 1 was killed by signal 6
// (Aborted)"), and the others are stopped (SIGTERM to their process group, SIGKILL after a grace period)
// instead of hanging in their next collective. The same happens, with DeadlineExceeded, when the timeout
// expires. Children run in their own process groups so that their own children are stopped too.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace megatron::distributed {

struct SpawnOptions {
  // Wall-clock limit for the whole job; the children are stopped when it expires.
  absl::Duration timeout = absl::InfiniteDuration();
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: pick a free port
  // Extra variables for every child (after the rank variables, so they may override them).
  std::vector<std::pair<std::string, std::string>> env;
  // Stop the other ranks as soon as one fails. When false every rank runs to completion and the error lists
  // every failed rank (tests where a rank is meant to die use this).
  bool stop_all_on_failure = true;
  // Between SIGTERM and SIGKILL when stopping children.
  absl::Duration kill_grace = absl::Seconds(2);
  // Receives each prefixed output line ("[rank 0] hello", no newline). Default: written to stdout.
  std::function<void(const std::string& line)> output;
};

// Runs `argv` (argv[0] looked up in PATH) as `nproc` ranks. OK when all exit 0.
// InvalidArgument for nproc < 1 or an empty argv; Aborted naming the failed rank(s) otherwise;
// DeadlineExceeded on timeout. A program that cannot be executed exits with status 127.
absl::Status SpawnLocal(int nproc, const std::vector<std::string>& argv, absl::Duration timeout);
absl::Status SpawnLocal(int nproc, const std::vector<std::string>& argv, const SpawnOptions& options);

// The same supervision for forked copies of this process: child `rank` runs child_main(rank) after fork()
// (with the rank variables set in its environment) and exits with its return value via _exit (no atexit
// handlers, no static destructors: the parent's state, e.g. gtest's, is not torn down twice). Fork from a
// process that has not started threads of its own where possible; only the forking thread survives.
absl::Status ForkAndSupervise(int nproc, const std::function<int(int rank)>& child_main, const SpawnOptions& options);

}  // namespace megatron::distributed
