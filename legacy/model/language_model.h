// The legacy language model (megatron/legacy/model/language_model.py): Embedding, Pooler and
// TransformerLanguageModel, single process. Names under the model's `language_model`:
//   embedding.word_embeddings.weight [V, h], embedding.position_embeddings.weight [P, h],
//   embedding.tokentype_embeddings.weight [T, h] (num_tokentypes > 0),
//   encoder.* (ParallelTransformer, see transformer.h), decoder.* (T5), pooler.dense.{weight,bias} [h, h] (add_pooler),
//   output_layer.weight [V, h] (untied embeddings only).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "legacy/model/transformer.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::legacy {

class Embedding : public transformer::MegatronModule {
 public:
  Embedding(const transformer::TransformerConfig& config, int num_tokentypes);
  // input_ids, position_ids, tokentype_ids [b, s] -> [s, b, h]: word + position (+ tokentype), transposed, dropout.
  at::Tensor Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                     const at::Tensor& tokentype_ids) const;
  const at::Tensor& word_embeddings_weight() const { return word_embeddings_->weight(); }

 private:
  class Table : public transformer::MegatronModule {
   public:
    Table(int64_t rows, int64_t dim, double std);
    const at::Tensor& weight() const { return weight_; }

   private:
    at::Tensor weight_;
  };
  transformer::TransformerConfig config_;
  Table* word_embeddings_;
  Table* position_embeddings_;
  Table* tokentype_embeddings_ = nullptr;
};

class Pooler : public transformer::MegatronModule {
 public:
  explicit Pooler(const transformer::TransformerConfig& config);
  // hidden [s, b, h] -> tanh(dense(hidden[sequence_index])) [b, h].
  at::Tensor Forward(const at::Tensor& hidden, int64_t sequence_index = 0) const;

 private:
  transformer::Linear* dense_;
};

struct LanguageModelOutput {
  at::Tensor encoder_output;  // [s, b, h]
  at::Tensor pooled;          // [b, h] with the pooler
};

class TransformerLanguageModel : public transformer::MegatronModule {
 public:
  // add_decoder (T5): also a causal `decoder` stack of decoder layers reading the encoder output; the embedding
  // serves both.
  TransformerLanguageModel(const transformer::TransformerConfig& config, const LegacyOptions& options,
                           AttnMaskType encoder_attn_mask_type, int num_tokentypes, bool add_pooler,
                           bool add_decoder = false);
  LanguageModelOutput Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                              const at::Tensor& attention_mask, const at::Tensor& tokentype_ids) const;
  // The decoder's output [sd, b, h] (needs add_decoder).
  at::Tensor DecoderForward(const at::Tensor& decoder_ids, const at::Tensor& position_ids,
                            const at::Tensor& decoder_mask, const at::Tensor& encoder_output,
                            const at::Tensor& enc_dec_mask) const;

  const Embedding& embedding() const { return *embedding_; }
  const ParallelTransformer& encoder() const { return *encoder_; }
  // Undefined with tied embeddings.
  at::Tensor output_layer_weight() const { return output_layer_ ? output_layer_->weight() : at::Tensor(); }

 private:
  Embedding* embedding_;
  ParallelTransformer* encoder_;
  ParallelTransformer* decoder_ = nullptr;
  Pooler* pooler_ = nullptr;
  transformer::Linear* output_layer_ = nullptr;
};

}  // namespace megatron::legacy
