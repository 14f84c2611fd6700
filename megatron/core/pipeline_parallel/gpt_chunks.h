// A pipeline-parallel GPT on one rank: its model chunks and the tied-embedding synchronisation
// (Megatron's model_provider(pre_process, post_process, vp_stage) loop and finalize_model_grads' embedding part).
//
//   auto assignment = parallel_state::LayerAssignment::Even(config.num_layers, pp, vp);
//   auto chunks = BuildGptChunks(config, tp_parallel, *assignment, pp_rank);   // VP chunks, chunk 0 first
//   SyncTiedEmbeddings(*chunks, embedding_group);        // once, before training
//   ... ForwardBackward(...) ...
//   AllReduceTiedEmbeddingGrads(*chunks, embedding_group);   // after every backward, before the optimizer
//
// embedding_group: this rank's group of parallel_state's kEmbedding kind ({first, last} pipeline rank with the
// same TP/DP coordinates), nullptr on ranks outside it; both functions do nothing without tied embeddings or
// without a pipeline.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/parallel_state/layer_assignment.h"

namespace megatron::pipeline_parallel {

using GptChunks = std::vector<std::unique_ptr<models::GPTModel>>;

// Chunk v holds assignment.Chunk(pp_rank, v); the embedding on (rank 0, chunk 0), the final layernorm, output
// layer and loss on (rank PP − 1, chunk VP − 1). Every chunk is built from the default generator's state at entry,
// so each holds the single-process model's weights for its layers (Note [Pipeline initialisation]); on return the
// generator is where building the whole model leaves it.
absl::StatusOr<GptChunks> BuildGptChunks(const transformer::TransformerConfig& config,
                                         const transformer::ModelParallel& parallel,
                                         const parallel_state::LayerAssignment& assignment, int pp_rank);

// Sums SharedEmbeddingWeight() over the embedding group: the last stage's zero-initialised copy becomes the first
// stage's word embeddings (Megatron's _sync_embedding_weights at setup).
absl::Status SyncTiedEmbeddings(const GptChunks& chunks, distributed::Group* embedding_group);

// Sums the gradients of SharedEmbeddingWeight() over the embedding group, so both copies take the same step.
absl::Status AllReduceTiedEmbeddingGrads(const GptChunks& chunks, distributed::Group* embedding_group);

}  // namespace megatron::pipeline_parallel
