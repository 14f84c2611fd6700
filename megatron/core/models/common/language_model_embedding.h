// LanguageModelEmbedding (Megatron's models/common/embeddings/language_model_embedding.py):
// word embeddings (+ learned absolute position embeddings), transposed to sequence-first [s, b, h], then
// embedding dropout. Parameter names: word_embeddings.weight [V, h], position_embeddings.weight [P, h].
// Under tensor parallelism (ModelParallel) word_embeddings is a VocabParallelEmbedding (weight [V/tp, h]; V must
// divide by tp); position embeddings are replicated. With sequence parallelism the output is scattered along
// s: [s/tp, b, h].
//
// Options (BERT): `num_tokentypes` > 0 adds tokentype_embeddings.weight [T, h] (segment ids; Megatron adds them
// after the transpose); `layernorm` normalises the sum before dropout (layernorm.weight/bias; HuggingFace
// BERT's embeddings.LayerNorm, which post-norm BERT needs; Megatron core's pre-norm BERT has none).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "megatron/core/tensor_parallel/layers.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {

struct EmbeddingOptions {
  int num_tokentypes = 0;
  bool layernorm = false;
};

class LanguageModelEmbedding : public transformer::MegatronModule {
 public:
  explicit LanguageModelEmbedding(const transformer::TransformerConfig& config,
                                  const transformer::ModelParallel& parallel = {},
                                  const EmbeddingOptions& options = {});

  // input_ids, position_ids: [b, s] int64 -> [s, b, h] ([s/tp, b, h] with sequence parallelism).
  // tokentype_ids: [b, s] int64 in [0, num_tokentypes), required exactly when num_tokentypes > 0.
  at::Tensor Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                     const at::Tensor& tokentype_ids = {}) const;

  // [V, h], or this rank's [V/tp, h] shard under tensor parallelism.
  const at::Tensor& word_embeddings_weight() const {
    return word_embeddings_ != nullptr ? word_embeddings_->weight() : word_embeddings_tp_->weight();
  }

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
  transformer::ModelParallel parallel_;
  Embedding* word_embeddings_ = nullptr;                                   // without TP
  tensor_parallel::VocabParallelEmbedding* word_embeddings_tp_ = nullptr;  // with TP
  Embedding* position_embeddings_ = nullptr;  // learned absolute positions only
  Embedding* tokentype_embeddings_ = nullptr;  // num_tokentypes > 0
  transformer::Norm* layernorm_ = nullptr;  // options.layernorm
};

}  // namespace megatron::models
