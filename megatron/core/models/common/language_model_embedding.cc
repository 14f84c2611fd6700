#include "megatron/core/models/common/language_model_embedding.h"

#include "megatron/core/tensor_parallel/mappings.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>

namespace megatron::models {

LanguageModelEmbedding::Embedding::Embedding(int64_t num_embeddings, int64_t dim, double init_std) {
  weight_ = RegisterParameter("weight", at::empty({num_embeddings, dim}).normal_(0.0, init_std));
}

LanguageModelEmbedding::LanguageModelEmbedding(const transformer::TransformerConfig& config,
                                               const transformer::ModelParallel& parallel,
                                               const EmbeddingOptions& options)
    : config_(config), parallel_(parallel) {
  if (parallel.enabled()) {
    TORCH_CHECK(config.vocab_size % parallel.tp_size() == 0, "LanguageModelEmbedding: model.vocab_size=",
                config.vocab_size, " is not divisible by the tensor-parallel size ", parallel.tp_size(),
                "; pad it (parallel_state::PaddedVocabSize)");
    word_embeddings_tp_ = RegisterModule(
        "word_embeddings", std::make_unique<tensor_parallel::VocabParallelEmbedding>(
                               config.vocab_size, config.hidden_size,
                               transformer::InitMethod{config.init_method_std}, parallel.tp));
  } else {
    word_embeddings_ = RegisterModule(
        "word_embeddings",
        std::make_unique<Embedding>(config.vocab_size, config.hidden_size, config.init_method_std));
  }
  if (config.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute) {
    position_embeddings_ = RegisterModule(
        "position_embeddings",
        std::make_unique<Embedding>(config.max_position_embeddings, config.hidden_size, config.init_method_std));
  }
  if (options.num_tokentypes > 0) {
    tokentype_embeddings_ = RegisterModule(
        "tokentype_embeddings",
        std::make_unique<Embedding>(options.num_tokentypes, config.hidden_size, config.init_method_std));
  }
  if (options.layernorm) {
    layernorm_ = RegisterModule("layernorm", transformer::LocalBackend()->MakeNorm(config, config.hidden_size));
  }
}

at::Tensor LanguageModelEmbedding::Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                           const at::Tensor& tokentype_ids) const {
  TORCH_CHECK(input_ids.dim() == 2, "LanguageModelEmbedding: input_ids must be [b, s], got ", input_ids.sizes());
  at::Tensor h = word_embeddings_ != nullptr ? at::embedding(word_embeddings_->weight(), input_ids)
                                             : word_embeddings_tp_->Forward(input_ids);
  if (position_embeddings_ != nullptr) {
    TORCH_CHECK(position_ids.defined() && position_ids.sizes() == input_ids.sizes(),
                "LanguageModelEmbedding: position_ids must match input_ids ", input_ids.sizes());
    TORCH_CHECK(position_ids.max().item<int64_t>() < config_.max_position_embeddings,
                "LanguageModelEmbedding: position ", position_ids.max().item<int64_t>(),
                " >= max_position_embeddings ", config_.max_position_embeddings);
    h = h + at::embedding(position_embeddings_->weight(), position_ids);
  }
  h = h.transpose(0, 1).contiguous();  // [b, s, h] -> [s, b, h]
  TORCH_CHECK(tokentype_ids.defined() == (tokentype_embeddings_ != nullptr),
              "LanguageModelEmbedding: tokentype_ids must be given exactly when the model has token types");
  if (tokentype_embeddings_ != nullptr) {
    TORCH_CHECK(tokentype_ids.sizes() == input_ids.sizes(), "LanguageModelEmbedding: tokentype_ids ",
                tokentype_ids.sizes(), " must match input_ids ", input_ids.sizes());
    h = h + at::embedding(tokentype_embeddings_->weight(), tokentype_ids).transpose(0, 1);
  }
  if (layernorm_ != nullptr) h = layernorm_->Forward(h);
  if (parallel_.enabled() && parallel_.sequence_parallel) {
    h = tensor_parallel::ScatterToSequenceParallelRegion(h, parallel_.tp);  // [s/tp, b, h]
  }
  return at::dropout(h, config_.hidden_dropout, training());
}

}  // namespace megatron::models
