// The legacy BertModel (megatron/legacy/model/bert_model.py): TransformerLanguageModel with a padding-masked
// encoder (and pooler with the binary head), BertLMHead (dense, GeLU, norm, tied logits + bias), binary head.
//
//   Forward(input_ids [b,s], attention_mask [b,s] (1 = token, 0 = padding), tokentype_ids [b,s], lm_labels)
//     -> lm: logits [b,s,V] (lm_labels undefined) or per-token CE [b,s] fp32; binary_logits [b,2]
// The extended mask is Megatron's bert_extended_attention_mask: the outer product of the padding mask,
// [b,1,s,s], then < 0.5 (true = masked). Padded query rows therefore attend uniformly (every score is -10000);
// only real positions are meaningful (core BERT masks keys only: the two agree on real positions).
// Parameters: language_model.*, lm_head.dense.{weight,bias} [h,h], lm_head.norm.{weight,bias} [h],
// lm_head.bias [V], binary_head.{weight [2,h], bias [2]}.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "legacy/model/language_model.h"
#include "legacy/model/module.h"
#include "legacy/model/transformer.h"

namespace megatron::legacy {

struct BertOutput {
  at::Tensor lm;
  at::Tensor binary_logits;
};

class BertModel : public MegatronModule {
 public:
  // Untied embeddings are rejected (Megatron's BERT does not support them).
  static absl::StatusOr<std::unique_ptr<BertModel>> Create(const transformer::TransformerConfig& config,
                                                           const LegacyOptions& options = {},
                                                           int num_tokentypes = 2, bool add_binary_head = true);

  BertOutput Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& tokentype_ids,
                     const at::Tensor& lm_labels = {}) const;

  const TransformerLanguageModel& language_model() const { return *language_model_; }

 private:
  BertModel(const transformer::TransformerConfig& config, const LegacyOptions& options, int num_tokentypes,
            bool add_binary_head);

  class BertLMHead : public transformer::MegatronModule {
   public:
    BertLMHead(const transformer::TransformerConfig& config, const LegacyOptions& options);
    // hidden [s, b, h], tied word embeddings [V, h] -> logits [s, b, V].
    at::Tensor Forward(const at::Tensor& hidden, const at::Tensor& word_embeddings) const;

   private:
    at::Tensor bias_;  // [V]
    transformer::Linear* dense_;
    transformer::Norm* norm_;
  };

  transformer::TransformerConfig config_;
  TransformerLanguageModel* language_model_;
  BertLMHead* lm_head_;
  transformer::Linear* binary_head_ = nullptr;
};

// bert_extended_attention_mask: [b, s] (1 = token) -> boolean [b, 1, s, s], true = masked.
at::Tensor BertExtendedAttentionMask(const at::Tensor& attention_mask);

}  // namespace megatron::legacy
