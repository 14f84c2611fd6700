// Single-node launcher, the torchrun replacement for our binaries:
//   bazel run //tools:launch -- --nproc_per_node=4 [--master_port=29500] [--timeout_s=0] -- PROGRAM [ARGS...]
// Starts PROGRAM nproc_per_node times with RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR /
// MASTER_PORT set (the torchrun contract that megatron::distributed::LaunchEnv reads), prefixes each line of
// output with [rank N], and if one rank fails stops the others and exits non-zero naming that rank.
// Several nodes: run PROGRAM under `torchrun --no-python` or `srun` instead; LaunchEnv reads their variables.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "megatron/core/distributed/spawn.h"

int main(int argc, char** argv) {
  int nproc = 1, port = 0;
  int64_t timeout_s = 0;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    bool ok = true;
    if (absl::StartsWith(arg, "--nproc_per_node=")) {
      ok = absl::SimpleAtoi(arg.substr(17), &nproc) && nproc > 0;
    } else if (absl::StartsWith(arg, "--master_port=")) {
      ok = absl::SimpleAtoi(arg.substr(14), &port) && port >= 0 && port < 65536;
    } else if (absl::StartsWith(arg, "--timeout_s=")) {
      ok = absl::SimpleAtoi(arg.substr(12), &timeout_s) && timeout_s >= 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "launch: bad flag \"%s\"\nusage: launch --nproc_per_node=N [--master_port=P] [--timeout_s=S] -- "
                   "PROGRAM [ARGS...]\n",
                   arg.c_str());
      return 2;
    }
  }
  if (i >= argc) {
    std::fprintf(stderr, "launch: no program given (usage: launch --nproc_per_node=N -- PROGRAM [ARGS...])\n");
    return 2;
  }
  std::vector<std::string> program(argv + i, argv + argc);
  megatron::distributed::SpawnOptions options;
  options.master_port = port;
  options.timeout = timeout_s > 0 ? absl::Seconds(timeout_s) : absl::InfiniteDuration();
  absl::Status status = megatron::distributed::SpawnLocal(nproc, program, options);
  if (!status.ok()) {
    std::fprintf(stderr, "launch: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
