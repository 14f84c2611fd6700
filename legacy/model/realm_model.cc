#include "legacy/model/realm_model.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/zeros_like.h>

#include "absl/strings/str_cat.h"
#include "legacy/model/bert_model.h"

namespace megatron::legacy {

IREncoderBertModel::IREncoderBertModel(const transformer::TransformerConfig& config, const LegacyOptions& options,
                                       int ict_head_size, int num_tokentypes) {
  language_model_ = RegisterModule("language_model", std::make_unique<TransformerLanguageModel>(
                                                         config, options, AttnMaskType::kPadding, num_tokentypes,
                                                         /*add_pooler=*/true));
  ict_head_ = RegisterModule("ict_head", std::make_unique<transformer::Linear>(
                                             config.hidden_size, ict_head_size, /*bias=*/true,
                                             transformer::InitMethod{config.init_method_std}));
}

at::Tensor IREncoderBertModel::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                       const at::Tensor& tokentype_ids) const {
  TORCH_CHECK(input_ids.dim() == 2 && attention_mask.sizes() == input_ids.sizes(),
              "IREncoderBertModel: input_ids and attention_mask must both be [b, s], got ", input_ids.sizes(),
              " and ", attention_mask.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  const at::Tensor positions = at::arange(s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  const LanguageModelOutput out =
      language_model_->Forward(input_ids, positions, BertExtendedAttentionMask(attention_mask), tokentype_ids);
  return ict_head_->Forward(out.pooled);
}

absl::StatusOr<std::unique_ptr<ICTBertModel>> ICTBertModel::Create(const transformer::TransformerConfig& config,
                                                                   int ict_head_size, const LegacyOptions& options) {
  transformer::TransformerConfig c = config;
  c.attn_mask_type = transformer::AttnMask::kPadding;
  if (absl::Status s = ValidateLegacyConfig(c, options); !s.ok()) return s;
  if (ict_head_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("ict_head_size must be positive, got ", ict_head_size));
  }
  return std::unique_ptr<ICTBertModel>(new ICTBertModel(c, ict_head_size, options));
}

ICTBertModel::ICTBertModel(const transformer::TransformerConfig& config, int ict_head_size,
                           const LegacyOptions& options) {
  // Megatron builds both towers with two token types (BERT's), and feeds the block tower zeros.
  query_model_ = RegisterModule("query_model",
                                std::make_unique<IREncoderBertModel>(config, options, ict_head_size, 2));
  block_model_ = RegisterModule("context_model",
                                std::make_unique<IREncoderBertModel>(config, options, ict_head_size, 2));
}

at::Tensor ICTBertModel::EmbedQuery(const at::Tensor& ids, const at::Tensor& mask) const {
  return query_model_->Forward(ids, mask, at::zeros_like(ids));
}

at::Tensor ICTBertModel::EmbedBlock(const at::Tensor& ids, const at::Tensor& mask) const {
  return block_model_->Forward(ids, mask, at::zeros_like(ids));
}

std::pair<at::Tensor, at::Tensor> ICTBertModel::Forward(const at::Tensor& query_ids, const at::Tensor& query_mask,
                                                        const at::Tensor& block_ids,
                                                        const at::Tensor& block_mask) const {
  return {EmbedQuery(query_ids, query_mask), EmbedBlock(block_ids, block_mask)};
}

}  // namespace megatron::legacy
