// The order in which one pipeline rank runs its forward and backward passes (Megatron's
// pipeline_parallel/schedules.py), as a pure function so it can be checked exhaustively without processes.
//
// Non-interleaved 1F1B (VP = 1), pipeline rank r of PP, M micro-batches:
//   warm-up   W = min(PP − r − 1, M) forwards,
//   steady    M − W times (one forward, then one backward),
//   cool-down W backwards.
// Interleaved (VP > 1 model chunks per rank; Megatron's forward_backward_pipelining_with_interleaving with
// microbatch_group_size_per_vp_stage G = PP): the M·VP forwards are taken in groups of G micro-batches, each group
// visiting chunks 0..VP−1 in turn (forward k: chunk (k mod G·VP) / G, micro-batch (k / G·VP)·G + k mod G);
// backwards visit the chunks in reverse. Warm-up = min((PP − r − 1)·2 + (VP − 1)·G, M·VP), and every forward is
// warm-up when M == PP (Megatron's all_warmup_microbatches). M must be a multiple of PP (Megatron's requirement
// before its schedule table allowed M mod G >= PP).
// forward_only (evaluation): the forwards alone, micro-batch by micro-batch, each through the chunks in order
// (no backward waits for them, so no grouping is needed and any M works).
//
// Activations travel around the pipeline ring: chunk v of rank r feeds chunk v of rank r + 1, and rank PP − 1's
// chunk v feeds rank 0's chunk v + 1 (parallel_state::LayerAssignment's model order).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::pipeline_parallel {

struct PipelineOp {
  enum class Kind { kForward, kBackward };
  Kind kind = Kind::kForward;
  int chunk = 0;       // virtual pipeline stage (model chunk) on this rank
  int microbatch = 0;
  bool operator==(const PipelineOp& o) const {
    return kind == o.kind && chunk == o.chunk && microbatch == o.microbatch;
  }
};
std::string ToString(const PipelineOp& op);  // "F(c0,m3)" / "B(c1,m0)"

// The ops of pipeline rank pp_rank, in execution order. InvalidArgument naming the field for M < 1, a rank
// outside [0, pp), VP < 1, or (VP > 1, training) M not a multiple of PP.
absl::StatusOr<std::vector<PipelineOp>> SchedulePlan(int pp, int pp_rank, int vp, int num_microbatches,
                                                     bool forward_only = false);

// Number of warm-up forwards of a rank (the formula above); exposed for tests and logging.
int NumWarmupForwards(int pp, int pp_rank, int vp, int num_microbatches);

}  // namespace megatron::pipeline_parallel
