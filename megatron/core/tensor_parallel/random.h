// Random state of a run (Megatron's tensor_parallel/random.py, the single-process part so far): one seed for
// the CPU and CUDA default generators, and their states as tensors so checkpoints can restore them exactly.
// The model-parallel RNG tracker (dropout differing across TP ranks) builds on this.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace megatron::tensor_parallel {

// Seeds the CPU generator and, when CUDA is available, every CUDA device's default generator.
void ManualSeed(uint64_t seed);

// {"cpu": state, "cuda": state of the current device (if CUDA is available)} as uint8 tensors.
std::map<std::string, at::Tensor> GetRngState();
// Restores GetRngState(); a missing "cpu" entry is an error, "cuda" is restored when present and usable.
absl::Status SetRngState(const std::map<std::string, at::Tensor>& state);

}  // namespace megatron::tensor_parallel
