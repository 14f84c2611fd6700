#include "megatron/core/models/common/language_model_embedding.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>

namespace megatron::models {

LanguageModelEmbedding::Embedding::Embedding(int64_t num_embeddings, int64_t dim, double init_std) {
  weight_ = RegisterParameter("weight", at::empty({num_embeddings, dim}).normal_(0.0, init_std));
}

LanguageModelEmbedding::LanguageModelEmbedding(const transformer::TransformerConfig& config) : config_(config) {
  word_embeddings_ = RegisterModule(
      "word_embeddings", std::make_unique<Embedding>(config.vocab_size, config.hidden_size, config.init_method_std));
  if (config.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute) {
    position_embeddings_ = RegisterModule(
        "position_embeddings",
        std::make_unique<Embedding>(config.max_position_embeddings, config.hidden_size, config.init_method_std));
  }
}

at::Tensor LanguageModelEmbedding::Forward(const at::Tensor& input_ids, const at::Tensor& position_ids) const {
  TORCH_CHECK(input_ids.dim() == 2, "LanguageModelEmbedding: input_ids must be [b, s], got ", input_ids.sizes());
  at::Tensor h = at::embedding(word_embeddings_->weight(), input_ids);
  if (position_embeddings_ != nullptr) {
    TORCH_CHECK(position_ids.defined() && position_ids.sizes() == input_ids.sizes(),
                "LanguageModelEmbedding: position_ids must match input_ids ", input_ids.sizes());
    TORCH_CHECK(position_ids.max().item<int64_t>() < config_.max_position_embeddings,
                "LanguageModelEmbedding: position ", position_ids.max().item<int64_t>(),
                " >= max_position_embeddings ", config_.max_position_embeddings);
    h = h + at::embedding(position_embeddings_->weight(), position_ids);
  }
  h = h.transpose(0, 1).contiguous();  // [b, s, h] -> [s, b, h]
  return at::dropout(h, config_.hidden_dropout, training());
}

}  // namespace megatron::models
