// The legacy REALM/ICT retriever towers (megatron/legacy/model/realm_model.py), single process.
//
// IREncoderBertModel: a BERT TransformerLanguageModel with pooler, then ict_head (Linear h -> ict_head_size) on
// the pooled [CLS] state. ICTBertModel holds a query tower and a block tower (checkpoint keys query_model.* and
// context_model.*); the block tower runs with zero token types, as Megatron's embed_block does.
//   Forward(query ids/mask [b,s], block ids/mask [n,s]) -> query logits [b, ict], block logits [n, ict]
// Retrieval scores are query · blockᵀ (InBatchContrastiveLoss in biencoder_model.h trains the towers).
#pragma once

#include <memory>
#include <utility>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "legacy/model/language_model.h"
#include "legacy/model/module.h"
#include "legacy/model/transformer.h"

namespace megatron::legacy {

class IREncoderBertModel : public transformer::MegatronModule {
 public:
  IREncoderBertModel(const transformer::TransformerConfig& config, const LegacyOptions& options, int ict_head_size,
                     int num_tokentypes);
  // [b, s] ids, padding mask (1 = token), token types -> [b, ict_head_size].
  at::Tensor Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const at::Tensor& tokentype_ids) const;

 private:
  TransformerLanguageModel* language_model_;
  transformer::Linear* ict_head_;
};

class ICTBertModel : public MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<ICTBertModel>> Create(const transformer::TransformerConfig& config,
                                                              int ict_head_size, const LegacyOptions& options = {});
  std::pair<at::Tensor, at::Tensor> Forward(const at::Tensor& query_ids, const at::Tensor& query_mask,
                                            const at::Tensor& block_ids, const at::Tensor& block_mask) const;
  at::Tensor EmbedQuery(const at::Tensor& ids, const at::Tensor& mask) const;
  at::Tensor EmbedBlock(const at::Tensor& ids, const at::Tensor& mask) const;

 private:
  ICTBertModel(const transformer::TransformerConfig& config, int ict_head_size, const LegacyOptions& options);
  IREncoderBertModel* query_model_;
  IREncoderBertModel* block_model_;
};

}  // namespace megatron::legacy
