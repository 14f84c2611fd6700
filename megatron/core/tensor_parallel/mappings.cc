#include "megatron/core/tensor_parallel/mappings.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <string>
#include <vector>

namespace megatron::tensor_parallel {
namespace {

using distributed::Group;
using distributed::ReduceOp;

int64_t CheckedChunk(const at::Tensor& input, int64_t dim, const Group& group, const char* what) {
  const int64_t size = input.size(dim);
  TORCH_CHECK(size % group.size() == 0, what, ": dimension ", dim, " of shape ", input.sizes(),
              " is not divisible by the tensor-parallel size ", group.size(), " (group ", group.name(), ")");
  return size / group.size();
}

// The collective each direction of a mapping performs.
enum class Comm : int64_t {
  kIdentity,
  kAllReduce,
  kSplitLast,
  kGatherLast,
  kSplitFirst,
  kGatherFirst,
  kReduceScatterFirst,
};

at::Tensor Apply(Comm comm, const at::Tensor& x, Group& group, const char* what) {
  switch (comm) {
    case Comm::kIdentity: return x;
    case Comm::kAllReduce: {
      at::Tensor out = x.clone(at::MemoryFormat::Contiguous);
      AllReduceInPlace(out, group, ReduceOp::kSum, what);
      return out;
    }
    case Comm::kSplitLast: return SplitAlong(x, x.dim() - 1, group, what);
    case Comm::kGatherLast: return AllGatherAlong(x, x.dim() - 1, group, what);
    case Comm::kSplitFirst: return SplitAlong(x, 0, group, what);
    case Comm::kGatherFirst: return AllGatherAlong(x, 0, group, what);
    case Comm::kReduceScatterFirst: return ReduceScatterDim0(x, group, what);
  }
  TORCH_CHECK(false, what, ": unknown communication");
}

// One autograd function for every mapping: `forward_comm` now, `backward_comm` on the gradient.
struct Mapping : public torch::autograd::Function<Mapping> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Group* group,
                            Comm forward_comm, Comm backward_comm, const char* what) {
    // The group and the name are kept by address: both outlive the backward (see the header).
    ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
    ctx->saved_data["what"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(what));
    ctx->saved_data["backward_comm"] = static_cast<int64_t>(backward_comm);
    return Apply(forward_comm, input, *group, what);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* group = reinterpret_cast<Group*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
    auto* what = reinterpret_cast<const char*>(static_cast<intptr_t>(ctx->saved_data["what"].toInt()));
    const auto comm = static_cast<Comm>(ctx->saved_data["backward_comm"].toInt());
    return {Apply(comm, grads[0], *group, what), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor Map(const at::Tensor& input, Group* group, Comm forward_comm, Comm backward_comm, const char* what) {
  if (!IsParallel(group)) return input;
  return Mapping::apply(input, group, forward_comm, backward_comm, what);
}

// See LinearWithAsyncGradAllReduce in the header.
struct AsyncGradAllReduceLinear : public torch::autograd::Function<AsyncGradAllReduceLinear> {
  // `bias` is an empty tensor when there is none (Function::apply does not take undefined tensors).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, Group* group) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
    const bool has_bias = bias.numel() > 0;
    ctx->saved_data["has_bias"] = has_bias;
    return at::linear(input, weight, has_bias ? std::optional<at::Tensor>(bias) : std::nullopt);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    auto* group = reinterpret_cast<Group*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
    const at::Tensor grad_out = grads[0].contiguous();
    const int64_t out_features = weight.size(0), in_features = weight.size(1);
    at::Tensor grad_input = at::matmul(grad_out, weight).contiguous();
    absl::StatusOr<distributed::Work> work = group->IAllReduce(grad_input, ReduceOp::kSum);
    TORCH_CHECK(work.ok(), "linear_with_async_grad_allreduce: ", std::string(work.status().message()));
    const at::Tensor grad_out_2d = grad_out.reshape({-1, out_features});
    at::Tensor grad_weight = at::mm(grad_out_2d.t(), input.reshape({-1, in_features}));
    at::Tensor grad_bias = ctx->saved_data["has_bias"].toBool() ? grad_out_2d.sum(0) : at::Tensor();
    const absl::Status waited = work->Wait();
    TORCH_CHECK(waited.ok(), "linear_with_async_grad_allreduce: ", std::string(waited.message()));
    return {grad_input, grad_weight, grad_bias, at::Tensor()};
  }
};

}  // namespace

at::Tensor LinearWithAsyncGradAllReduce(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                        Group* group) {
  if (!IsParallel(group)) {
    return at::linear(input, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
  }
  const c10::DeviceType device = input.device().type();
  const at::Tensor no_bias = bias.defined() ? at::Tensor() : at::empty({0}, weight.options().requires_grad(false));
  if (at::autocast::is_autocast_enabled(device)) {
    // What autocast does inside at::linear, done outside the function so that its backward sees one dtype (the
    // casts are ordinary autograd ops and carry the gradients back to the fp32 weights).
    const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
    // cached_cast: fp32 weights are cast once per autocast region, as inside at::linear.
    return AsyncGradAllReduceLinear::apply(at::autocast::cached_cast(dtype, input, device),
                                           at::autocast::cached_cast(dtype, weight, device),
                                           bias.defined() ? at::autocast::cached_cast(dtype, bias, device) : no_bias,
                                           group);
  }
  return AsyncGradAllReduceLinear::apply(input, weight, bias.defined() ? bias : no_bias, group);
}

void AllReduceInPlace(at::Tensor& tensor, Group& group, ReduceOp op, const char* what) {
  TORCH_CHECK(tensor.is_contiguous(), what, ": all-reduce needs a contiguous tensor");
  absl::Status status = group.AllReduce(tensor, op);
  TORCH_CHECK(status.ok(), what, ": ", std::string(status.message()));
}

at::Tensor AllGatherAlong(const at::Tensor& input, int64_t dim, Group& group, const char* what) {
  if (dim == 0) {
    absl::StatusOr<at::Tensor> out = group.AllGatherConcat(input.contiguous());
    TORCH_CHECK(out.ok(), what, ": ", std::string(out.status().message()));
    return *out;
  }
  absl::StatusOr<std::vector<at::Tensor>> parts = group.AllGather(input.contiguous());
  TORCH_CHECK(parts.ok(), what, ": ", std::string(parts.status().message()));
  return at::cat(*parts, dim);
}

at::Tensor SplitAlong(const at::Tensor& input, int64_t dim, Group& group, const char* what) {
  const int64_t chunk = CheckedChunk(input, dim, group, what);
  // A copy, not a view: the chunk is a new activation, independent of the input's storage.
  return input.narrow(dim, group.rank() * chunk, chunk).clone(at::MemoryFormat::Contiguous);
}

at::Tensor ReduceScatterDim0(const at::Tensor& input, Group& group, const char* what) {
  CheckedChunk(input, 0, group, what);
  absl::StatusOr<at::Tensor> out = group.ReduceScatter(input.contiguous(), ReduceOp::kSum);
  TORCH_CHECK(out.ok(), what, ": ", std::string(out.status().message()));
  return *out;
}

at::Tensor CopyToTensorParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kIdentity, Comm::kAllReduce, "copy_to_tensor_parallel_region");
}

at::Tensor ReduceFromTensorParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kAllReduce, Comm::kIdentity, "reduce_from_tensor_parallel_region");
}

at::Tensor ScatterToTensorParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kSplitLast, Comm::kGatherLast, "scatter_to_tensor_parallel_region");
}

at::Tensor GatherFromTensorParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kGatherLast, Comm::kSplitLast, "gather_from_tensor_parallel_region");
}

at::Tensor ScatterToSequenceParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kSplitFirst, Comm::kGatherFirst, "scatter_to_sequence_parallel_region");
}

at::Tensor GatherFromSequenceParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kGatherFirst, Comm::kReduceScatterFirst, "gather_from_sequence_parallel_region");
}

at::Tensor ReduceScatterToSequenceParallelRegion(const at::Tensor& input, Group* group) {
  return Map(input, group, Comm::kReduceScatterFirst, Comm::kGatherFirst,
             "reduce_scatter_to_sequence_parallel_region");
}

}  // namespace megatron::tensor_parallel
