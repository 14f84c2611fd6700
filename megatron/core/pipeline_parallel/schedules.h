// Forward and backward over micro-batches and pipeline stages (Megatron's get_forward_backward_func):
// no pipelining (PP = 1), 1F1B (PP > 1, one model chunk per rank) and interleaved (PP > 1, VP chunks per rank),
// in the order SchedulePlan gives.
//
//   auto step = [&](int chunk, int microbatch, const at::Tensor& input) -> at::Tensor {
//     // input: undefined on the pipeline's first chunk, else the previous chunk's output (requires grad).
//     // Return the chunk's output; on the pipeline's last chunk, the scalar loss to back-propagate
//     // (Megatron: the micro-batch's loss divided by the number of micro-batches).
//   };
//   absl::Status s = ForwardBackward(step, pp_group.get(), {.num_chunks = vp, .num_microbatches = m});
//
// Each received activation is made a leaf that requires grad; after the chunk's backward its .grad() is sent to
// the previous chunk. Parameter gradients accumulate over the micro-batches (as in Megatron, where the
// gradient reduction across data-parallel ranks follows the whole schedule). With forward_only (evaluation)
// no autograd graph needs to be kept: call it under NoGradGuard.
#pragma once

#include <functional>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "megatron/core/distributed/process_group.h"

namespace megatron::pipeline_parallel {

using ForwardStepFn = std::function<at::Tensor(int chunk, int microbatch, const at::Tensor& input)>;

struct ScheduleOptions {
  int num_chunks = 1;        // virtual pipeline stages (model chunks) on this rank
  int num_microbatches = 1;
  bool forward_only = false;
};

// pipeline_group: this rank's pipeline group (group rank = pipeline rank), or nullptr / size 1 for no pipelining.
// Errors: the schedule's argument checks (SchedulePlan), and p2p failures naming the rank, peer and tag.
absl::Status ForwardBackward(const ForwardStepFn& forward_step, distributed::Group* pipeline_group,
                             const ScheduleOptions& options);

}  // namespace megatron::pipeline_parallel
