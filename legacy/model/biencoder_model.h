// The legacy two-tower retriever (megatron/legacy/model/biencoder_model.py; ICT / DPR style), single process.
//
// Each tower is a PretrainedBertModel: a BERT TransformerLanguageModel without pooler whose embedding of a
// sequence is the [CLS] hidden state (lm_output[0]), optionally through projection_enc (Linear h -> projection).
// Towers are query_model.* and context_model.*, or one shared_model.* (biencoder_shared_query_context_model).
//   Forward(query ids/mask/types [b,s], context ids/mask/types [n,s]) -> query [b, d], context [n, d]
// InBatchContrastiveLoss is the training loss of tasks/orqa/supervised (cross_entropy_loss_func): scores = q c^T
// (divided by sqrt(h) with retriever_score_scaling), log-softmax over the contexts, NLL against the diagonal
// (query i's positive is context i; the other contexts of the batch are its negatives).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "legacy/model/language_model.h"
#include "legacy/model/module.h"
#include "legacy/model/transformer.h"

namespace megatron::legacy {

struct BiEncoderOptions {
  int num_tokentypes = 1;
  bool shared_query_context_model = false;
  int projection_dim = 0;  // 0: no projection_enc
};

class PretrainedBertModel : public transformer::MegatronModule {
 public:
  PretrainedBertModel(const transformer::TransformerConfig& config, const LegacyOptions& options,
                      int num_tokentypes, int projection_dim);
  // [b, s] ids, [b, s] padding mask (1 = token), [b, s] token types -> [b, d].
  at::Tensor Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const at::Tensor& tokentype_ids) const;

 private:
  TransformerLanguageModel* language_model_;
  transformer::Linear* projection_enc_ = nullptr;
};

struct BiEncoderOutput {
  at::Tensor query;    // [b, d]
  at::Tensor context;  // [n, d]
};

class BiEncoderModel : public MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<BiEncoderModel>> Create(const transformer::TransformerConfig& config,
                                                                const LegacyOptions& legacy_options = {},
                                                                const BiEncoderOptions& options = {});
  BiEncoderOutput Forward(const at::Tensor& query_ids, const at::Tensor& query_mask, const at::Tensor& query_types,
                          const at::Tensor& context_ids, const at::Tensor& context_mask,
                          const at::Tensor& context_types) const;

 private:
  BiEncoderModel(const transformer::TransformerConfig& config, const LegacyOptions& legacy_options,
                 const BiEncoderOptions& options);
  PretrainedBertModel* query_model_;
  PretrainedBertModel* context_model_;  // == query_model_ when shared
};

enum class ScoreScaling { kOff, kOn };

// query [b, d], context [n, d] with n >= b (context i is query i's positive) -> mean NLL, a 0-d fp32 tensor.
at::Tensor InBatchContrastiveLoss(const at::Tensor& query, const at::Tensor& context, ScoreScaling scaling);

}  // namespace megatron::legacy
