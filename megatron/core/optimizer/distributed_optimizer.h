// AdamW sharded across data-parallel ranks (Megatron's DistributedOptimizer, ZeRO-1 style).
//
// The gradient buffer of DataParallelGrads (every parameter's .grad is a view into it, padded to a multiple of DP)
// is split into DP equal contiguous ranges; rank d owns range d. Only the owner keeps Adam's exp_avg / exp_avg_sq
// for its range (and fp32 master weights where the parameters are half precision; fp32 and fp64 parameters are
// their own master weights, updated through views, as in Megatron). A step:
//   1. the gradients were averaged over DP by DataParallelGrads (an all-reduce per bucket; on Gloo a
//      reduce-scatter costs the same, and each rank then reads only its range);
//   2. ClipGradNorm: the global norm from each rank's range (each element counted once), summed over DP and over
//      the model-parallel group;
//   3. Step: the AdamW update (optimizer.h's formula, elementwise, so it equals the unsharded AdamW) on the owned
//      range, then an all-gather of the updated ranges into every parameter.
// Bytes per parameter on one rank with fp32 parameters (Megatron's table, "fp32 everything"): parameter 4 +
// gradient 4 + Adam state 8/DP (StateBytes()), against 16 for the unsharded AdamW.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/distributed/data_parallel.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/optimizer/optimizer.h"

namespace megatron::optimizer {

class DistributedAdamW {
 public:
  // `grads` must outlive the optimizer; its group is the data-parallel group the state is sharded over.
  DistributedAdamW(const distributed::DataParallelGrads& grads, AdamWConfig config);

  // Scales the owned gradients so that the global L2 norm is at most max_norm (no-op when max_norm <= 0);
  // returns the norm before clipping. `counted(name)`: whether the parameter enters the norm (false for
  // TP-replicated parameters on TP ranks other than 0 and for the tied output copy). model_group: the
  // tensor x pipeline group to sum over as well (nullptr: none).
  absl::StatusOr<double> ClipGradNorm(double max_norm, const std::function<bool(const std::string&)>& counted,
                                      distributed::Group* model_group);
  // One update of the owned range with learning rate lr, then the all-gather of the parameters.
  absl::Status Step(double lr);
  void ZeroGrad();

  int64_t step_count() const { return step_; }
  // AdamW::StateDict's entries for the whole (unsharded) parameters: "exp_avg.<param>", "exp_avg_sq.<param>" of
  // each parameter's shape, and "step". Collective over the data-parallel group: the owned ranges are gathered
  // (every rank gets the full state; checkpoints then store it like the unsharded optimizer's).
  absl::StatusOr<std::map<std::string, at::Tensor>> StateDict() const;
  // Restores a StateDict() (of any data-parallel size, or of AdamW): each rank keeps its owned ranges. Not collective.
  absl::Status LoadStateDict(const std::map<std::string, at::Tensor>& state);
  int64_t shard_numel() const { return shard_end_ - shard_begin_; }
  // Bytes of optimizer state held by this rank: exp_avg, exp_avg_sq and any separate master weights.
  int64_t StateBytes() const;

 private:
  // The per-segment ATen update (AdamWConfig::fused off, or a shard mixing parameter dtypes).
  void FallbackStep(double lr);
  // All-gathers the updated ranges into every rank's parameters.
  absl::Status GatherParameters();
  // The part of one parameter inside this rank's range.
  struct Segment {
    int entry = 0;
    int64_t param_begin = 0;   // flat index into the parameter
    int64_t buffer_begin = 0;  // index into the gradient buffer
    int64_t numel = 0;
    bool decay = true;
    at::Tensor master;      // a view of the parameter, or an fp32 copy for half-precision parameters
    at::Tensor exp_avg;     // [numel]
    at::Tensor exp_avg_sq;  // [numel]
  };

  const distributed::DataParallelGrads& grads_;
  AdamWConfig config_;
  int64_t shard_begin_ = 0, shard_end_ = 0;
  std::vector<Segment> segments_;
  int64_t step_ = 0;
};

}  // namespace megatron::optimizer
