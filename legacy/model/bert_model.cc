#include "legacy/model/bert_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>

namespace megatron::legacy {

at::Tensor BertExtendedAttentionMask(const at::Tensor& attention_mask) {
  TORCH_CHECK(attention_mask.dim() == 2, "BertExtendedAttentionMask: attention_mask must be [b, s], got ",
              attention_mask.sizes());
  const at::Tensor m = attention_mask.to(at::kFloat);
  const at::Tensor bss = m.unsqueeze(1) * m.unsqueeze(2);  // [b, s, s]
  return bss.unsqueeze(1).lt(0.5);
}

BertModel::BertLMHead::BertLMHead(const transformer::TransformerConfig& config, const LegacyOptions& options) {
  // Registration order follows Megatron's module (bias first, then dense and norm); only names matter.
  bias_ = RegisterParameter("bias", at::zeros({config.vocab_size}));
  dense_ = RegisterModule("dense", std::make_unique<transformer::Linear>(
                                       config.hidden_size, config.hidden_size, /*bias=*/true,
                                       transformer::InitMethod{config.init_method_std}));
  norm_ = RegisterModule("norm", GetNorm(config, options));
}

at::Tensor BertModel::BertLMHead::Forward(const at::Tensor& hidden, const at::Tensor& word_embeddings) const {
  // F.gelu (erf) whatever the encoder's activation, as Megatron's BertLMHead without openai_gelu/onnx_safe.
  const at::Tensor x = norm_->Forward(at::gelu(dense_->Forward(hidden)));
  return at::linear(x, word_embeddings, bias_);
}

absl::StatusOr<std::unique_ptr<BertModel>> BertModel::Create(const transformer::TransformerConfig& config,
                                                             const LegacyOptions& options, int num_tokentypes,
                                                             bool add_binary_head) {
  transformer::TransformerConfig c = config;
  c.attn_mask_type = transformer::AttnMask::kPadding;
  if (absl::Status s = ValidateLegacyConfig(c, options); !s.ok()) return s;
  if (!c.share_embeddings_and_output_weights) {
    return absl::InvalidArgumentError(
        "model.share_embeddings_and_output_weights: the legacy BertModel ties its LM head to the word embeddings");
  }
  if (num_tokentypes < 0) return absl::InvalidArgumentError("num_tokentypes must be >= 0");
  return std::unique_ptr<BertModel>(new BertModel(c, options, num_tokentypes, add_binary_head));
}

BertModel::BertModel(const transformer::TransformerConfig& config, const LegacyOptions& options, int num_tokentypes,
                     bool add_binary_head)
    : config_(config) {
  language_model_ = RegisterModule("language_model", std::make_unique<TransformerLanguageModel>(
                                                         config, options, AttnMaskType::kPadding, num_tokentypes,
                                                         /*add_pooler=*/add_binary_head));
  lm_head_ = RegisterModule("lm_head", std::make_unique<BertLMHead>(config, options));
  if (add_binary_head) {
    binary_head_ = RegisterModule("binary_head", std::make_unique<transformer::Linear>(
                                                     config.hidden_size, 2, /*bias=*/true,
                                                     transformer::InitMethod{config.init_method_std}));
  }
}

BertOutput BertModel::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                              const at::Tensor& tokentype_ids, const at::Tensor& lm_labels) const {
  TORCH_CHECK(input_ids.dim() == 2, "BertModel: input_ids must be [b, s], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  const at::Tensor padding = attention_mask.defined() ? attention_mask : at::ones_like(input_ids);
  TORCH_CHECK(padding.sizes() == input_ids.sizes(), "BertModel: attention_mask ", padding.sizes(),
              " must match input_ids ", input_ids.sizes());
  const at::Tensor extended = BertExtendedAttentionMask(padding);
  const at::Tensor positions = at::arange(s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  LanguageModelOutput lm = language_model_->Forward(input_ids, positions, extended, tokentype_ids);

  BertOutput out;
  if (binary_head_ != nullptr) out.binary_logits = binary_head_->Forward(lm.pooled);
  const at::Tensor logits = lm_head_->Forward(lm.encoder_output, language_model_->embedding().word_embeddings_weight());
  if (!lm_labels.defined()) {
    out.lm = logits.transpose(0, 1);
    return out;
  }
  TORCH_CHECK(lm_labels.sizes() == input_ids.sizes(), "BertModel: lm_labels ", lm_labels.sizes(),
              " must match input_ids ", input_ids.sizes());
  // post_language_model_processing: logits [b, s, V] in fp32 against lm_labels [b, s].
  const at::Tensor logits_bsv = logits.transpose(0, 1).to(at::kFloat);
  out.lm = at::cross_entropy_loss(logits_bsv.reshape({b * s, config_.vocab_size}), lm_labels.reshape({b * s}), {},
                                  at::Reduction::None)
               .view({b, s});
  return out;
}

}  // namespace megatron::legacy
