#include "megatron/core/pipeline_parallel/schedule_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace megatron::pipeline_parallel {

std::string ToString(const PipelineOp& op) {
  return absl::StrCat(op.kind == PipelineOp::Kind::kForward ? "F" : "B", "(c", op.chunk, ",m", op.microbatch, ")");
}

int NumWarmupForwards(int pp, int pp_rank, int vp, int num_microbatches) {
  if (vp == 1) return std::min(pp - pp_rank - 1, num_microbatches);
  const int total = num_microbatches * vp;
  if (num_microbatches == pp) return total;
  return std::min((pp - pp_rank - 1) * 2 + (vp - 1) * pp, total);
}

absl::StatusOr<std::vector<PipelineOp>> SchedulePlan(int pp, int pp_rank, int vp, int num_microbatches,
                                                     bool forward_only) {
  if (pp < 1) return absl::InvalidArgumentError(absl::StrCat("pipeline_model_parallel_size: ", pp, " must be >= 1"));
  if (pp_rank < 0 || pp_rank >= pp) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline rank ", pp_rank, " is outside [0, ", pp, ")"));
  }
  if (vp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("virtual_pipeline_model_parallel_size: ", vp, " must be >= 1"));
  }
  if (num_microbatches < 1) {
    return absl::InvalidArgumentError(absl::StrCat("number of micro-batches: ", num_microbatches, " must be >= 1"));
  }
  if (forward_only) {
    std::vector<PipelineOp> ops;
    for (int m = 0; m < num_microbatches; ++m) {
      for (int v = 0; v < vp; ++v) ops.push_back(PipelineOp{PipelineOp::Kind::kForward, v, m});
    }
    return ops;
  }
  if (vp > 1 && num_microbatches % pp != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "number of micro-batches (", num_microbatches, " = global_batch_size / (micro_batch_size x DP)) must be a "
        "multiple of pipeline_model_parallel_size ", pp, " for the interleaved schedule (virtual_pipeline_model_"
        "parallel_size ", vp, ")"));
  }
  const int group = vp == 1 ? 1 : pp;  // G
  const int total = num_microbatches * vp;
  auto forward = [&](int k) {
    const int in_group = k % (group * vp);
    return PipelineOp{PipelineOp::Kind::kForward, in_group / group, (k / (group * vp)) * group + in_group % group};
  };
  auto backward = [&](int k) {
    PipelineOp op = forward(k);
    op.kind = PipelineOp::Kind::kBackward;
    op.chunk = vp - 1 - op.chunk;
    return op;
  };
  std::vector<PipelineOp> ops;
  const int warmup = NumWarmupForwards(pp, pp_rank, vp, num_microbatches);
  for (int k = 0; k < warmup; ++k) ops.push_back(forward(k));
  for (int k = 0; k < total - warmup; ++k) {
    ops.push_back(forward(warmup + k));
    ops.push_back(backward(k));
  }
  for (int k = total - warmup; k < total; ++k) ops.push_back(backward(k));
  return ops;
}

}  // namespace megatron::pipeline_parallel
