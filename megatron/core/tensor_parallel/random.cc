#include "megatron/core/tensor_parallel/random.h"

#include <ATen/Context.h>

namespace megatron::tensor_parallel {

void ManualSeed(uint64_t seed) { at::manual_seed(seed); }

std::map<std::string, at::Tensor> GetRngState() {
  std::map<std::string, at::Tensor> out;
  out["cpu"] = at::globalContext().defaultGenerator(at::kCPU).get_state();
  if (at::hasCUDA()) out["cuda"] = at::globalContext().defaultGenerator(at::kCUDA).get_state();
  return out;
}

absl::Status SetRngState(const std::map<std::string, at::Tensor>& state) {
  auto cpu = state.find("cpu");
  if (cpu == state.end()) return absl::InvalidArgumentError("rng state: missing \"cpu\" generator state");
  at::Generator cpu_generator = at::globalContext().defaultGenerator(at::kCPU);  // a handle to the global one
  cpu_generator.set_state(cpu->second);
  auto cuda = state.find("cuda");
  if (cuda != state.end() && at::hasCUDA()) {
    at::Generator cuda_generator = at::globalContext().defaultGenerator(at::kCUDA);
    cuda_generator.set_state(cuda->second);
  }
  return absl::OkStatus();
}

}  // namespace megatron::tensor_parallel
