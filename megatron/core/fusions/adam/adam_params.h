// The AdamW hyper-parameters of one step and the per-step scalars derived from them, shared by the CUDA kernel
// (adam_kernel.cu), the float64 reference (adam_reference.cc) and the contract (adam.h), so the formula cannot
// drift between them. Plain C++: compiled by nvcc and the host compiler.
#pragma once

#include <cmath>
#include <cstdint>

namespace megatron::fusions {

struct AdamWStepParams {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;  // applied only to tensors whose decay flag is set
  int64_t step = 1;            // 1-based: the step being taken (bias corrections use it)
};

// Scalars of one step, computed once on the host in double. The update of one element (optimizer::AdamW's):
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p = p * decay_factor (decayed tensors only)
//   p = p - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
// with step_size = lr / (1 - beta1^t), inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t), decay_factor = 1 - lr wd.
struct AdamWScalars {
  double beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  double step_size, inv_sqrt_bc2, decay_factor;
};

inline AdamWScalars MakeAdamWScalars(const AdamWStepParams& p) {
  const double t = static_cast<double>(p.step);
  AdamWScalars s;
  s.beta1 = p.beta1;
  s.one_minus_beta1 = 1.0 - p.beta1;
  s.beta2 = p.beta2;
  s.one_minus_beta2 = 1.0 - p.beta2;
  s.eps = p.eps;
  s.step_size = p.lr / (1.0 - std::pow(p.beta1, t));
  s.inv_sqrt_bc2 = 1.0 / std::sqrt(1.0 - std::pow(p.beta2, t));
  s.decay_factor = 1.0 - p.lr * p.weight_decay;
  return s;
}

}  // namespace megatron::fusions
