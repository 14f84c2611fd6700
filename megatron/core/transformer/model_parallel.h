// How a model is split across tensor-parallel ranks; passed to model construction (GPTModel::Create) and
// threaded to the layers. The default (tp == nullptr) or a group of size 1 builds the single-process modules
// (plain Linear and embedding), bit for bit what a model built without it computes.
//
// With a TP group of size N (Megatron's tensor_model_parallel_size), as Megatron core's local spec:
//   linear_qkv  ColumnParallelLinear: each rank owns num_query_groups/N whole query groups (Note [QKV layout])
//   linear_proj RowParallelLinear(input_is_parallel)
//   linear_fc1  ColumnParallelLinear; for SwiGLU each shard holds [gate_r; up_r] (partition stride 2)
//   linear_fc2  RowParallelLinear(input_is_parallel)
//   word_embeddings VocabParallelEmbedding; the output layer (tied or its own) is vocab-sharded, logits stay
//               vocab-parallel into VocabParallelCrossEntropy.
// Norms and position embeddings are replicated.
//
// sequence_parallel (Megatron's config.sequence_parallel): activations outside attention/MLP are [s/N, b, h];
// the embedding output is scattered along s and gathered before the output layer. The gradients of the
// replicated parameters that see only a rank's tokens (norm weights/biases, Row biases) must then be
// all-reduced across TP (GPTModel::SequenceParallelParameters lists them).
//
// cp (Megatron's context_parallel_size): each CP rank holds the tokens of two of the sequence's 2·CP chunks
// (parallel_state::ZigzagPositions); self-attention all-gathers keys and values over the CP group (their
// gradients are reduce-scattered back) and masks causally by global position. The model's inputs, labels and
// per-token losses are this rank's tokens; the trainer sums losses and gradients over CP.
#pragma once

#include "megatron/core/distributed/process_group.h"

namespace megatron::transformer {

struct ModelParallel {
  distributed::Group* tp = nullptr;  // must outlive the model and its backward passes
  bool sequence_parallel = false;
  distributed::Group* cp = nullptr;  // context-parallel group; must outlive the model and its backward passes

  int tp_size() const { return tp == nullptr ? 1 : tp->size(); }
  int cp_size() const { return cp == nullptr ? 1 : cp->size(); }
  int cp_rank() const { return cp == nullptr ? 0 : cp->rank(); }
  // True when the model is actually sharded (a group of size > 1).
  bool enabled() const { return tp_size() > 1; }
};

}  // namespace megatron::transformer
