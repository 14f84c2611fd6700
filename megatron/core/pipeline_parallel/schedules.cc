#include "megatron/core/pipeline_parallel/schedules.h"

#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "megatron/core/pipeline_parallel/p2p_communication.h"
#include "megatron/core/pipeline_parallel/schedule_plan.h"

namespace megatron::pipeline_parallel {
namespace {

enum Direction { kActivation = 0, kGradient = 1 };

// One tag per (direction, receiving chunk, micro-batch): messages match exactly, whatever the posting order.
int Tag(Direction direction, int chunk, int microbatch, int num_chunks) {
  return (microbatch * num_chunks + chunk) * 2 + direction;
}

}  // namespace

absl::Status ForwardBackward(const ForwardStepFn& forward_step, distributed::Group* pipeline_group,
                             const ScheduleOptions& options) {
  const int pp = pipeline_group == nullptr ? 1 : pipeline_group->size();
  const int rank = pipeline_group == nullptr ? 0 : pipeline_group->rank();
  const int vp = options.num_chunks;
  absl::StatusOr<std::vector<PipelineOp>> plan =
      SchedulePlan(pp, rank, vp, options.num_microbatches, options.forward_only);
  if (!plan.ok()) return plan.status();
  if (pp == 1 && vp != 1) {
    return absl::InvalidArgumentError("virtual_pipeline_model_parallel_size > 1 needs pipeline_model_parallel_size > 1");
  }
  std::optional<PipelineP2P> p2p;
  if (pp > 1) p2p.emplace(pipeline_group);

  // Saved per (chunk, micro-batch) between its forward and backward.
  std::map<std::pair<int, int>, std::pair<at::Tensor, at::Tensor>> saved;  // {input, output}
  for (const PipelineOp& op : *plan) {
    const bool first = rank == 0 && op.chunk == 0;
    const bool last = rank == pp - 1 && op.chunk == vp - 1;
    if (op.kind == PipelineOp::Kind::kForward) {
      at::Tensor input;
      if (!first) {
        absl::StatusOr<at::Tensor> received = p2p->Recv(p2p->prev(), Tag(kActivation, op.chunk, op.microbatch, vp));
        if (!received.ok()) return received.status();
        input = *received;
        if (!options.forward_only) input.requires_grad_(true);
      }
      at::Tensor output = forward_step(op.chunk, op.microbatch, input);
      if (!last) {
        // The next chunk: the same chunk on the next rank, or the next chunk on rank 0 after a lap of the ring.
        const int next_chunk = rank == pp - 1 ? op.chunk + 1 : op.chunk;
        if (absl::Status s = p2p->Send(output, p2p->next(), Tag(kActivation, next_chunk, op.microbatch, vp));
            !s.ok()) {
          return s;
        }
      }
      if (!options.forward_only) saved[{op.chunk, op.microbatch}] = {input, output};
      continue;
    }
    auto it = saved.find({op.chunk, op.microbatch});
    TORCH_CHECK(it != saved.end(), "ForwardBackward: backward ", ToString(op), " before its forward");
    auto [input, output] = std::move(it->second);
    saved.erase(it);
    if (last) {
      TORCH_CHECK(output.numel() == 1, "ForwardBackward: the last chunk's forward step must return the scalar loss, "
                  "got ", output.sizes());
      output.backward();
    } else {
      absl::StatusOr<at::Tensor> grad = p2p->Recv(p2p->next(), Tag(kGradient, op.chunk, op.microbatch, vp));
      if (!grad.ok()) return grad.status();
      TORCH_CHECK(grad->sizes() == output.sizes(), "ForwardBackward: gradient ", grad->sizes(), " for ",
                  ToString(op), " does not match its output ", output.sizes());
      output.backward(*grad);
    }
    if (!first) {
      const int prev_chunk = rank == 0 ? op.chunk - 1 : op.chunk;
      TORCH_CHECK(input.grad().defined(), "ForwardBackward: ", ToString(op),
                  ": the received activation got no gradient (is the chunk's output detached from its input?)");
      if (absl::Status s = p2p->Send(input.grad(), p2p->prev(), Tag(kGradient, prev_chunk, op.microbatch, vp));
          !s.ok()) {
        return s;
      }
    }
  }
  return p2p ? p2p->WaitSends() : absl::OkStatus();
}

}  // namespace megatron::pipeline_parallel
