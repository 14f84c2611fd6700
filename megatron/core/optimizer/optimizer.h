// AdamW with decoupled weight decay, global gradient-norm clipping, and Megatron's learning-rate schedule
// (megatron/core/optimizer: FusedAdam in adam_w_mode + clip_grads.py; optimizer_param_scheduler.py).
//
// AdamW step t (1-based) for each parameter p with gradient g:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p )
// Weight decay skips biases and norm weights (every 1-D parameter), as Megatron's get_param_groups does.
// State lives in fp32 beside the fp32 parameters (the master weights); bf16 only enters through autocast.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace megatron::optimizer {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;
  // One multi-tensor launch per step (fusions/adam: the CUDA kernel for CUDA parameters, its float64 reference
  // for CPU ones) instead of a few ATen ops per parameter. Same update; fp32 rounding may differ in the last ulp.
  bool fused = false;
};

// The per-tensor AdamW update of step `step` (1-based) in ATen ops, in place on `param` (the fp32 master or the
// parameter itself), `exp_avg` and `exp_avg_sq`; `grad` is cast to param's dtype when it differs. Decoupled weight
// decay applies to the parameter before this step's update when `decay`. Shared by AdamW and DistributedAdamW.
void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq, bool decay,
                 double lr, int64_t step, const AdamWConfig& config);

class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, at::Tensor>> named_parameters, AdamWConfig config);

  // One update with learning rate `lr` from the parameters' .grad(); parameters without a gradient are skipped.
  void Step(double lr);
  // Drops the gradients (they are re-created by the next backward).
  void ZeroGrad();

  int64_t step_count() const { return step_; }
  // "exp_avg.<param>", "exp_avg_sq.<param>" and "step" (a 0-d int64 tensor).
  std::map<std::string, at::Tensor> StateDict() const;
  // Restores a StateDict(); errors list missing or mis-shaped entries.
  absl::Status LoadStateDict(const std::map<std::string, at::Tensor>& state);

 private:
  struct Slot {
    std::string name;
    at::Tensor param;
    at::Tensor exp_avg;
    at::Tensor exp_avg_sq;
    bool decay;
  };
  AdamWConfig config_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// Scales gradients so their global L2 norm is at most `max_norm` (no-op when max_norm <= 0 or the norm is
// already below). Returns the norm before clipping. Norms are accumulated in fp32 (fp64 for fp64 grads).
double ClipGradNorm(const std::vector<at::Tensor>& parameters, double max_norm);

// Building blocks for clipping across shards (tensor/pipeline parallel, distributed optimizer), kept on the device
// so that a step has one host synchronisation, not one per parameter:
// The sum of the squared L2 norms of `grads` (undefined entries skipped) as a one-element float64 tensor on
// `device` (zero when there are none: every rank of a collective gets a tensor on the same kind of device).
// Per-tensor norms in fp32 (fp64 for fp64 grads), one multi-tensor launch per dtype.
at::Tensor SquaredNormSum(const std::vector<at::Tensor>& grads, const at::Device& device);
// Multiplies every defined gradient by max_norm / (total_norm + 1e-6) when max_norm > 0 and total_norm > max_norm.
void ScaleGradsToNorm(const std::vector<at::Tensor>& grads, double total_norm, double max_norm);

enum class LrDecay { kCosine, kLinear, kConstant };

// Megatron's OptimizerParamScheduler (learning-rate part): linear warmup from 0 to max_lr over warmup_steps,
// then decay to min_lr by decay_steps (cosine: min + (max-min) * (cos(pi * r) + 1) / 2), then min_lr.
struct LrSchedule {
  double max_lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup_steps = 0;
  int64_t decay_steps = 1;
  LrDecay style = LrDecay::kCosine;

  // The learning rate used for the update after `num_steps` completed steps.
  double LearningRate(int64_t num_steps) const;
};

}  // namespace megatron::optimizer
