#include "megatron/core/pipeline_parallel/gpt_chunks.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros_like.h>

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "megatron/core/tensor_parallel/random.h"

namespace megatron::pipeline_parallel {

absl::StatusOr<GptChunks> BuildGptChunks(const transformer::TransformerConfig& config,
                                         const transformer::ModelParallel& parallel,
                                         const parallel_state::LayerAssignment& assignment, int pp_rank) {
  if (assignment.num_layers() != config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline layer assignment covers ", assignment.num_layers(),
                                                   " layers but model.num_layers is ", config.num_layers));
  }
  if (pp_rank < 0 || pp_rank >= assignment.pp()) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline rank ", pp_rank, " is outside [0, ", assignment.pp(), ")"));
  }
  const std::map<std::string, at::Tensor> start = tensor_parallel::GetRngState();
  GptChunks chunks;
  for (int v = 0; v < assignment.vp(); ++v) {
    if (absl::Status s = tensor_parallel::SetRngState(start); !s.ok()) return s;
    const parallel_state::LayerRange layers = assignment.Chunk(pp_rank, v);
    models::PipelineStage stage;
    stage.pre_process = pp_rank == 0 && v == 0;
    stage.post_process = pp_rank == assignment.pp() - 1 && v == assignment.vp() - 1;
    stage.layer_begin = layers.begin;
    stage.layer_end = layers.end;
    absl::StatusOr<std::unique_ptr<models::GPTModel>> chunk = models::GPTModel::Create(config, parallel, stage);
    if (!chunk.ok()) return chunk.status();
    chunks.push_back(std::move(*chunk));
  }
  return chunks;
}

namespace {

// The tied weight of this rank's chunks (at most one: the first or the last chunk), or undefined.
at::Tensor SharedWeight(const GptChunks& chunks) {
  for (const auto& chunk : chunks) {
    at::Tensor w = chunk->SharedEmbeddingWeight();
    if (w.defined()) return w;
  }
  return {};
}

}  // namespace

absl::Status SyncTiedEmbeddings(const GptChunks& chunks, distributed::Group* embedding_group) {
  at::Tensor w = SharedWeight(chunks);
  if (!w.defined() || embedding_group == nullptr || embedding_group->size() < 2) return absl::OkStatus();
  at::NoGradGuard no_grad;
  at::Tensor buffer = w.detach().contiguous().clone();
  if (absl::Status s = embedding_group->AllReduce(buffer); !s.ok()) return s;
  w.detach().copy_(buffer);
  return absl::OkStatus();
}

absl::Status AllReduceTiedEmbeddingGrads(const GptChunks& chunks, distributed::Group* embedding_group) {
  at::Tensor w = SharedWeight(chunks);
  if (!w.defined() || embedding_group == nullptr || embedding_group->size() < 2) return absl::OkStatus();
  at::NoGradGuard no_grad;
  // A stage whose copy took no part in this step's graph contributes zeros.
  at::Tensor grad = w.grad().defined() ? w.grad().contiguous() : at::zeros_like(w);
  if (absl::Status s = embedding_group->AllReduce(grad); !s.ok()) return s;
  w.mutable_grad() = grad;
  return absl::OkStatus();
}

}  // namespace megatron::pipeline_parallel
