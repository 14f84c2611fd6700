// Tensor-parallel layers (Megatron's megatron/core/tensor_parallel/layers.py): the plain layer plus a sharded
// dimension plus a collective. At TP=1 (group nullptr or of size 1) each is exactly the plain layer:
// ColumnParallelLinear and RowParallelLinear compute what transformer::Linear computes, from the same weights.
//
//   ColumnParallelLinear  weight [out/tp, in], bias [out/tp]. x -> copy_to (or, with sequence parallelism,
//                         all-gather of the sequence dim 0) -> x W_r^T + b_r -> optional gather of the last dim.
//   RowParallelLinear     weight [out, in/tp], bias [out]. x (already split on the last dim, or split here)
//                         -> x_r W_r^T -> all-reduce (or, with sequence parallelism, reduce-scatter along
//                         dim 0) -> + b. The bias is added once, after the reduction.
//   VocabParallelEmbedding weight [vocab/tp, hidden]: rank r owns ids [r·vocab/tp, (r+1)·vocab/tp). Ids outside
//                         that range look up row 0 and are zeroed, then the ranks all-reduce.
//
// Initialisation (Megatron's use_cpu_initialization path): every rank draws the full, unsharded weight from the
// CPU generator exactly as transformer::Linear does (N(0, std) over [out, in], then zero bias) and keeps its
// shard. With the same seed, TP=N ranks therefore hold shards of the TP=1 master weight.
//
// Sequence parallelism (SequenceParallel::kOn, Megatron's config.sequence_parallel) keeps activations between
// blocks sharded along the sequence, [s/tp, b, h]. Its replicated parameters (RowParallelLinear's bias) then
// see only their rank's share of the tokens: like Megatron's finalize_model_grads, the training loop must
// all-reduce their gradients across the TP group (`sequence_parallel_parameters()` lists them).
//
// Partition stride (Megatron's `stride`): ColumnParallelLinear's output may stack `partition_stride` equal
// blocks (SwiGLU's fc1 = [gate; up]); each rank then keeps its row shard of every block, concatenated
// ([gate_r; up_r]), so the per-rank output has the same stacked layout as the full one.
//
// Construction checks that the sharded dimension divides by the group size and names it otherwise.
// Parameters are named "weight" and "bias", as Megatron's state-dict keys; the state dict holds each rank's
// shard (partition dim 0 for column/embedding, 1 for row). Not ported: skip_bias_add, gradient-accumulation
// fusion and the async dgrad all-reduce overlap, reduce_scatter_embeddings.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "megatron/core/distributed/process_group.h"
#include "megatron/core/transformer/init_method.h"
#include "megatron/core/transformer/module.h"

namespace megatron::tensor_parallel {

enum class GatherOutput { kNo, kYes };
enum class InputIsParallel { kNo, kYes };
enum class SequenceParallel { kOff, kOn };

class ColumnParallelLinear : public transformer::MegatronModule {
 public:
  ColumnParallelLinear(int64_t in_features, int64_t out_features, bool bias, GatherOutput gather_output,
                       transformer::InitMethod init, distributed::Group* group,
                       SequenceParallel sequence_parallel = SequenceParallel::kOff,
                       int64_t partition_stride = 1);
  // x [..., in] (with sequence parallelism [s/tp, ..., in]) -> [..., out/tp], or [..., out] when gathering.
  at::Tensor Forward(const at::Tensor& x) const;

  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }

 private:
  distributed::Group* group_;
  GatherOutput gather_output_;
  SequenceParallel sequence_parallel_;
  at::Tensor weight_;  // [out/tp, in]
  at::Tensor bias_;    // [out/tp] or undefined
};

class RowParallelLinear : public transformer::MegatronModule {
 public:
  RowParallelLinear(int64_t in_features, int64_t out_features, bool bias, InputIsParallel input_is_parallel,
                    transformer::InitMethod init, distributed::Group* group,
                    SequenceParallel sequence_parallel = SequenceParallel::kOff);
  // x [..., in/tp] (or [..., in] when the input is not parallel) -> [..., out]; with sequence parallelism
  // x [s, ..., in/tp] -> [s/tp, ..., out].
  at::Tensor Forward(const at::Tensor& x) const;

  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  // Parameters whose gradients must be all-reduced across TP under sequence parallelism (see above).
  std::vector<at::Tensor> sequence_parallel_parameters() const;

 private:
  distributed::Group* group_;
  InputIsParallel input_is_parallel_;
  SequenceParallel sequence_parallel_;
  at::Tensor weight_;  // [out, in/tp]
  at::Tensor bias_;    // [out] or undefined
};

class VocabParallelEmbedding : public transformer::MegatronModule {
 public:
  // `padded_vocab_size` must divide by the TP size (parallel_state::PaddedVocabSize rounds it up).
  VocabParallelEmbedding(int64_t padded_vocab_size, int64_t hidden, transformer::InitMethod init,
                         distributed::Group* group);
  // ids (int64, any shape) -> [..., hidden], replicated on every TP rank.
  at::Tensor Forward(const at::Tensor& ids) const;

  const at::Tensor& weight() const { return weight_; }
  int64_t vocab_start() const { return vocab_start_; }
  int64_t vocab_end() const { return vocab_end_; }

 private:
  distributed::Group* group_;
  int64_t vocab_start_;
  int64_t vocab_end_;
  at::Tensor weight_;  // [vocab/tp, hidden]
};

}  // namespace megatron::tensor_parallel
