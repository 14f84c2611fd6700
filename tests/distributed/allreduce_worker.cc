// A torchrun-style program for spawn_test: every rank all-reduces (rank + 1) and checks the sum
// world * (world + 1) / 2. Exits 0 on success, 1 with a message otherwise.
#include <ATen/ops/full.h>

#include <cstdio>
#include <string>

#include "absl/time/time.h"
#include "megatron/core/distributed/launch_env.h"
#include "megatron/core/distributed/process_group.h"

int main() {
  using namespace megatron::distributed;
  absl::StatusOr<LaunchEnv> env = LaunchEnv::FromEnvironment();
  if (!env.ok()) {
    std::fprintf(stderr, "%s\n", std::string(env.status().message()).c_str());
    return 1;
  }
  auto ctx = InitDistributed(*env, Backend::kGloo, absl::Seconds(10));
  if (!ctx.ok()) {
    std::fprintf(stderr, "%s\n", std::string(ctx.status().message()).c_str());
    return 1;
  }
  at::Tensor t = at::full({4}, static_cast<double>(env->rank + 1), at::kDouble);
  if (absl::Status s = (*ctx)->world().AllReduce(t); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double expected = env->world_size * (env->world_size + 1) / 2.0;
  const double got = t[3].item().toDouble();
  std::printf("%s: sum %g\n", env->DebugString().c_str(), got);
  if (got != expected) {
    std::fprintf(stderr, "expected %g\n", expected);
    return 1;
  }
  // Everyone leaves together: rank 0 serves the store.
  return (*ctx)->world().Barrier().ok() ? 0 : 1;
}
