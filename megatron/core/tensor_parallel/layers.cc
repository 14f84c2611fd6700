#include "megatron/core/tensor_parallel/layers.h"

#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>
#include <ATen/TensorOperators.h>

#include <optional>

#include "megatron/core/tensor_parallel/mappings.h"

namespace megatron::tensor_parallel {
namespace {

int TpSize(const distributed::Group* group) { return group == nullptr ? 1 : group->size(); }
int TpRank(const distributed::Group* group) { return group == nullptr ? 0 : group->rank(); }

// `size` split over the group; a clear error when it does not divide.
int64_t Partition(const char* layer, const char* dimension, int64_t size, const distributed::Group* group) {
  const int tp = TpSize(group);
  TORCH_CHECK(size > 0, layer, ": ", dimension, " must be positive, got ", size);
  TORCH_CHECK(size % tp == 0, layer, ": ", dimension, "=", size, " is not divisible by the tensor-parallel size ",
              tp, "; choose a multiple of ", tp);
  return size / tp;
}

// The full [rows, cols] weight drawn as transformer::Linear draws it, and this rank's shard along `dim`.
// With `stride` > 1 (dim 0 only) the rows are `stride` stacked blocks and the shard is this rank's rows of each.
at::Tensor ShardOfMasterWeight(int64_t rows, int64_t cols, transformer::InitMethod init, int64_t dim,
                               const distributed::Group* group, int64_t stride = 1) {
  at::Tensor master = at::empty({rows, cols}).normal_(0.0, init.std);
  if (stride > 1) {
    const int64_t chunk = rows / stride / TpSize(group);
    return master.view({stride, rows / stride, cols})
        .narrow(1, TpRank(group) * chunk, chunk)
        .reshape({stride * chunk, cols})
        .clone(at::MemoryFormat::Contiguous);
  }
  const int64_t chunk = master.size(dim) / TpSize(group);
  return master.narrow(dim, TpRank(group) * chunk, chunk).clone(at::MemoryFormat::Contiguous);
}

std::optional<at::Tensor> Optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(int64_t in_features, int64_t out_features, bool bias,
                                           GatherOutput gather_output, transformer::InitMethod init,
                                           distributed::Group* group, SequenceParallel sequence_parallel,
                                           int64_t partition_stride)
    : group_(group), gather_output_(gather_output), sequence_parallel_(sequence_parallel) {
  TORCH_CHECK(partition_stride >= 1 && out_features % partition_stride == 0, "ColumnParallelLinear: output_size=",
              out_features, " is not divisible by partition_stride=", partition_stride);
  const int64_t out_per_rank =
      partition_stride == 1
          ? Partition("ColumnParallelLinear", "output_size", out_features, group)
          : Partition("ColumnParallelLinear", "output_size/partition_stride", out_features / partition_stride,
                      group) * partition_stride;
  TORCH_CHECK(!(partition_stride > 1 && gather_output == GatherOutput::kYes),
              "ColumnParallelLinear: gather_output is not supported with partition_stride > 1");
  TORCH_CHECK(!(sequence_parallel == SequenceParallel::kOn && gather_output == GatherOutput::kYes),
              "ColumnParallelLinear: gather_output is not supported with sequence parallelism (as in Megatron)");
  weight_ = RegisterParameter("weight", ShardOfMasterWeight(out_features, in_features, init, 0, group,
                                                                  partition_stride));
  if (bias) bias_ = RegisterParameter("bias", at::zeros({out_per_rank}));
}

at::Tensor ColumnParallelLinear::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == weight_.size(1), "ColumnParallelLinear: input has ", x.size(-1),
              " features, weight expects ", weight_.size(1), " (input shape ", x.sizes(), ")");
  at::Tensor out = sequence_parallel_ == SequenceParallel::kOn
                       ? at::linear(GatherFromSequenceParallelRegion(x, group_), weight_, Optional(bias_))
                       : LinearWithAsyncGradAllReduce(x, weight_, bias_, group_);
  return gather_output_ == GatherOutput::kYes ? GatherFromTensorParallelRegion(out, group_) : out;
}

RowParallelLinear::RowParallelLinear(int64_t in_features, int64_t out_features, bool bias,
                                     InputIsParallel input_is_parallel, transformer::InitMethod init,
                                     distributed::Group* group, SequenceParallel sequence_parallel)
    : group_(group), input_is_parallel_(input_is_parallel), sequence_parallel_(sequence_parallel) {
  Partition("RowParallelLinear", "input_size", in_features, group);
  TORCH_CHECK(!(sequence_parallel == SequenceParallel::kOn && input_is_parallel == InputIsParallel::kNo),
              "RowParallelLinear: sequence parallelism needs input_is_parallel (as in Megatron)");
  weight_ = RegisterParameter("weight", ShardOfMasterWeight(out_features, in_features, init, 1, group));
  if (bias) bias_ = RegisterParameter("bias", at::zeros({out_features}));
}

at::Tensor RowParallelLinear::Forward(const at::Tensor& x) const {
  const int64_t expected = input_is_parallel_ == InputIsParallel::kYes ? weight_.size(1)
                                                                      : weight_.size(1) * TpSize(group_);
  TORCH_CHECK(x.size(-1) == expected, "RowParallelLinear: input has ", x.size(-1), " features, expected ",
              expected, " (input shape ", x.sizes(), ")");
  const at::Tensor input =
      input_is_parallel_ == InputIsParallel::kYes ? x : ScatterToTensorParallelRegion(x, group_);
  const at::Tensor partial = at::linear(input, weight_);
  at::Tensor out = sequence_parallel_ == SequenceParallel::kOn
                       ? ReduceScatterToSequenceParallelRegion(partial, group_)
                       : ReduceFromTensorParallelRegion(partial, group_);
  return bias_.defined() ? out + bias_ : out;
}

std::vector<at::Tensor> RowParallelLinear::sequence_parallel_parameters() const {
  if (sequence_parallel_ == SequenceParallel::kOff || !bias_.defined()) return {};
  return {bias_};
}

VocabParallelEmbedding::VocabParallelEmbedding(int64_t padded_vocab_size, int64_t hidden,
                                               transformer::InitMethod init, distributed::Group* group)
    : group_(group) {
  const int64_t per_rank = Partition("VocabParallelEmbedding", "padded_vocab_size", padded_vocab_size, group);
  vocab_start_ = TpRank(group) * per_rank;
  vocab_end_ = vocab_start_ + per_rank;
  weight_ = RegisterParameter("weight", ShardOfMasterWeight(padded_vocab_size, hidden, init, 0, group));
}

at::Tensor VocabParallelEmbedding::Forward(const at::Tensor& ids) const {
  TORCH_CHECK(ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt,
              "VocabParallelEmbedding: ids must be int64 or int32, got ", ids.scalar_type());
  if (!IsParallel(group_)) return at::embedding(weight_, ids);
  const at::Tensor outside = (ids < vocab_start_).logical_or(ids >= vocab_end_);
  const at::Tensor local_ids = (ids - vocab_start_).masked_fill(outside, 0);
  const at::Tensor partial = at::embedding(weight_, local_ids).masked_fill(outside.unsqueeze(-1), 0.0);
  return ReduceFromTensorParallelRegion(partial, group_);
}

}  // namespace megatron::tensor_parallel
