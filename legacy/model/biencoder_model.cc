#include "legacy/model/biencoder_model.h"

#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/nll_loss.h>

#include "legacy/model/bert_model.h"

namespace megatron::legacy {

PretrainedBertModel::PretrainedBertModel(const transformer::TransformerConfig& config, const LegacyOptions& options,
                                         int num_tokentypes, int projection_dim) {
  language_model_ = RegisterModule("language_model", std::make_unique<TransformerLanguageModel>(
                                                         config, options, AttnMaskType::kPadding, num_tokentypes,
                                                         /*add_pooler=*/false));
  if (projection_dim > 0) {
    projection_enc_ = RegisterModule("projection_enc", std::make_unique<transformer::Linear>(
                                                           config.hidden_size, projection_dim, /*bias=*/true,
                                                           transformer::InitMethod{config.init_method_std}));
  }
}

at::Tensor PretrainedBertModel::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                        const at::Tensor& tokentype_ids) const {
  TORCH_CHECK(input_ids.dim() == 2 && attention_mask.sizes() == input_ids.sizes(),
              "PretrainedBertModel: input_ids and attention_mask must both be [b, s], got ", input_ids.sizes(),
              " and ", attention_mask.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  const at::Tensor positions = at::arange(s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  const at::Tensor hidden = language_model_
                                ->Forward(input_ids, positions, BertExtendedAttentionMask(attention_mask),
                                          tokentype_ids)
                                .encoder_output;  // [s, b, h]
  at::Tensor pooled = hidden[0];                  // the [CLS] state
  return projection_enc_ != nullptr ? projection_enc_->Forward(pooled) : pooled;
}

absl::StatusOr<std::unique_ptr<BiEncoderModel>> BiEncoderModel::Create(const transformer::TransformerConfig& config,
                                                                       const LegacyOptions& legacy_options,
                                                                       const BiEncoderOptions& options) {
  transformer::TransformerConfig c = config;
  c.attn_mask_type = transformer::AttnMask::kPadding;
  if (absl::Status s = ValidateLegacyConfig(c, legacy_options); !s.ok()) return s;
  if (options.projection_dim < 0) return absl::InvalidArgumentError("biencoder_projection_dim must be >= 0");
  return std::unique_ptr<BiEncoderModel>(new BiEncoderModel(c, legacy_options, options));
}

BiEncoderModel::BiEncoderModel(const transformer::TransformerConfig& config, const LegacyOptions& legacy_options,
                               const BiEncoderOptions& options) {
  auto make = [&] {
    return std::make_unique<PretrainedBertModel>(config, legacy_options, options.num_tokentypes,
                                                 options.projection_dim);
  };
  if (options.shared_query_context_model) {
    query_model_ = context_model_ = RegisterModule("shared_model", make());
  } else {
    query_model_ = RegisterModule("query_model", make());
    context_model_ = RegisterModule("context_model", make());
  }
}

BiEncoderOutput BiEncoderModel::Forward(const at::Tensor& query_ids, const at::Tensor& query_mask,
                                        const at::Tensor& query_types, const at::Tensor& context_ids,
                                        const at::Tensor& context_mask, const at::Tensor& context_types) const {
  return {query_model_->Forward(query_ids, query_mask, query_types),
          context_model_->Forward(context_ids, context_mask, context_types)};
}

at::Tensor InBatchContrastiveLoss(const at::Tensor& query, const at::Tensor& context, ScoreScaling scaling) {
  TORCH_CHECK(query.dim() == 2 && context.dim() == 2 && query.size(1) == context.size(1) &&
                  context.size(0) >= query.size(0),
              "InBatchContrastiveLoss: query [b, d] and context [n >= b, d] expected, got ", query.sizes(), " and ",
              context.sizes());
  at::Tensor scores = at::matmul(query.to(at::kFloat), context.to(at::kFloat).t());  // [b, n]
  if (scaling == ScoreScaling::kOn) scores = scores / std::sqrt(static_cast<double>(query.size(1)));
  const at::Tensor labels = at::arange(query.size(0), query.options().dtype(at::kLong));
  return at::nll_loss(at::log_softmax(scores, 1), labels, {}, at::Reduction::Mean);
}

}  // namespace megatron::legacy
