// Tensor lists for the multi-tensor AdamW tests (CPU and GPU): awkward size sets and deep copies.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <vector>

#include "megatron/core/fusions/adam/adam.h"

namespace megatron::fusions::testing {

// Sizes around every boundary the kernel has: one element, primes, the 4-element pack +-1, the chunk (16384) +-1,
// several chunks plus a tail.
inline std::vector<int64_t> AwkwardSizes() { return {1, 2, 3, 5, 7, 13, 127, 4095, 16383, 16384, 16385, 65537}; }

// Fresh lists on `device`: params ~ N(0,1) float32; grads ~ N(0,1) in grad_dtype; exp_avg ~ N(0, 0.1) and
// exp_avg_sq ~ U(0, 0.01) (a mid-training state, so the update is not just sign(g)); copies of copy_dtype, or none
// when copy_dtype is float32; decay on every tensor with an even index (covers both branches).
inline AdamWTensorLists MakeLists(const std::vector<int64_t>& sizes, at::ScalarType grad_dtype,
                                  at::ScalarType copy_dtype, at::Device device) {
  AdamWTensorLists l;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    l.params.push_back(at::randn({n}, f32).to(device));
    l.grads.push_back(at::randn({n}, f32).to(grad_dtype).to(device));
    l.exp_avgs.push_back((at::randn({n}, f32) * 0.1).to(device));
    l.exp_avg_sqs.push_back((at::rand({n}, f32) * 0.01).to(device));
    if (copy_dtype != at::kFloat) l.model_copies.push_back(at::zeros({n}, f32.dtype(copy_dtype)).to(device));
    l.decay.push_back(i % 2 == 0 ? 1 : 0);
  }
  return l;
}

// Deep copy onto `device` (optionally widening params and states to float64 for the reference).
inline AdamWTensorLists CopyLists(const AdamWTensorLists& l, at::Device device, bool float64_states = false) {
  AdamWTensorLists out;
  const auto copy = [&](const std::vector<at::Tensor>& from, std::vector<at::Tensor>& to, bool widen) {
    for (const at::Tensor& t : from) to.push_back(widen ? t.to(device, at::kDouble) : t.to(device).clone());
  };
  copy(l.params, out.params, float64_states);
  copy(l.grads, out.grads, false);
  copy(l.exp_avgs, out.exp_avgs, float64_states);
  copy(l.exp_avg_sqs, out.exp_avg_sqs, float64_states);
  copy(l.model_copies, out.model_copies, false);
  out.decay = l.decay;
  return out;
}

}  // namespace megatron::fusions::testing
