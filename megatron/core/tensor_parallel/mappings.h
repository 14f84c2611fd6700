// Communication between the tensor-parallel region and the replicated region, as autograd functions
// (Megatron's megatron/core/tensor_parallel/mappings.py). Each pairs a forward collective with the backward
// collective that makes the gradient right:
//
//   function                                forward                          backward
//   CopyToTensorParallelRegion              identity                         all-reduce (sum)
//   ReduceFromTensorParallelRegion          all-reduce (sum)                 identity
//   ScatterToTensorParallelRegion           split last dim, keep own chunk   all-gather last dim
//   GatherFromTensorParallelRegion          all-gather last dim              split last dim
//   ScatterToSequenceParallelRegion         split dim 0, keep own chunk      all-gather dim 0
//   GatherFromSequenceParallelRegion        all-gather dim 0                 reduce-scatter dim 0 (sum)
//   ReduceScatterToSequenceParallelRegion   reduce-scatter dim 0 (sum)       all-gather dim 0
//
// GatherFromSequenceParallelRegion is Megatron's default form (tensor_parallel_output_grad=True): the
// consumer of the gathered tensor is itself tensor-parallel, so each rank holds a partial gradient of the
// whole sequence and the backward must sum them.
//
// `group` is the tensor-parallel group; nullptr or a group of size 1 makes every function the identity (so
// TP=1 code paths are the plain layers). The group must outlive the backward pass (it is kept by pointer).
// Split dimensions must divide by the group size; chunks are in group-rank order. Collectives run on
// contiguous copies (Gloo needs them); a failed collective throws c10::Error naming the function.
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/distributed/process_group.h"

namespace megatron::tensor_parallel {

at::Tensor CopyToTensorParallelRegion(const at::Tensor& input, distributed::Group* group);
at::Tensor ReduceFromTensorParallelRegion(const at::Tensor& input, distributed::Group* group);
at::Tensor ScatterToTensorParallelRegion(const at::Tensor& input, distributed::Group* group);
at::Tensor GatherFromTensorParallelRegion(const at::Tensor& input, distributed::Group* group);

at::Tensor ScatterToSequenceParallelRegion(const at::Tensor& input, distributed::Group* group);
at::Tensor GatherFromSequenceParallelRegion(const at::Tensor& input, distributed::Group* group);
at::Tensor ReduceScatterToSequenceParallelRegion(const at::Tensor& input, distributed::Group* group);

// ColumnParallelLinear's body without sequence parallelism (Megatron's LinearWithGradAccumulationAndAsync-
// Communication with async_grad_allreduce): linear(input, weight, bias) forward; in backward the all-reduce of
// the input gradient is started before the weight gradient is computed and waited for after, so the
// communication runs beside the weight-gradient GEMM instead of after it. Equal to
// linear(CopyToTensorParallelRegion(input), weight, bias). Under autocast the operands are cast to the autocast
// dtype first, as at::linear would. bias may be undefined.
at::Tensor LinearWithAsyncGradAllReduce(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                        distributed::Group* group);

// The collectives themselves, without autograd (also used by the layers and the cross entropy). Throw on
// failure. AllReduceInPlace requires a contiguous tensor.
void AllReduceInPlace(at::Tensor& tensor, distributed::Group& group, distributed::ReduceOp op, const char* what);
at::Tensor AllGatherAlong(const at::Tensor& input, int64_t dim, distributed::Group& group, const char* what);
at::Tensor SplitAlong(const at::Tensor& input, int64_t dim, distributed::Group& group, const char* what);
at::Tensor ReduceScatterDim0(const at::Tensor& input, distributed::Group& group, const char* what);

// True when `group` shards anything (non-null and size > 1).
inline bool IsParallel(const distributed::Group* group) { return group != nullptr && group->size() > 1; }

}  // namespace megatron::tensor_parallel
