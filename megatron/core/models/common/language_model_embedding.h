// LanguageModelEmbedding (Megatron's models/common/embeddings/language_model_embedding.py):
// word embeddings (+ learned absolute position embeddings), transposed to sequence-first [s, b, h], then
// embedding dropout. Parameter names: word_embeddings.weight [V, h], position_embeddings.weight [P, h].
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {

class LanguageModelEmbedding : public transformer::MegatronModule {
 public:
  explicit LanguageModelEmbedding(const transformer::TransformerConfig& config);

  // input_ids, position_ids: [b, s] int64 -> [s, b, h].
  at::Tensor Forward(const at::Tensor& input_ids, const at::Tensor& position_ids) const;

  const at::Tensor& word_embeddings_weight() const { return word_embeddings_->weight(); }

 private:
  // A lookup table: weight [num_embeddings, dim].
  class Embedding : public transformer::MegatronModule {
   public:
    Embedding(int64_t num_embeddings, int64_t dim, double init_std);
    const at::Tensor& weight() const { return weight_; }

   private:
    at::Tensor weight_;
  };

  transformer::TransformerConfig config_;
  Embedding* word_embeddings_;
  Embedding* position_embeddings_ = nullptr;  // learned absolute positions only
};

}  // namespace megatron::models
