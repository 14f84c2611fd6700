#include "legacy/model/t5_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>

#include "legacy/model/bert_model.h"
#include "legacy/model/gpt_model.h"

namespace megatron::legacy {

T5Model::T5LMHead::T5LMHead(int64_t vocab_size) { bias_ = RegisterParameter("bias", at::zeros({vocab_size})); }

absl::StatusOr<std::unique_ptr<T5Model>> T5Model::Create(const transformer::TransformerConfig& config,
                                                         const LegacyOptions& options) {
  transformer::TransformerConfig c = config;
  c.attn_mask_type = transformer::AttnMask::kPadding;
  if (absl::Status s = ValidateLegacyConfig(c, options); !s.ok()) return s;
  if (!c.share_embeddings_and_output_weights) {
    return absl::InvalidArgumentError(
        "model.share_embeddings_and_output_weights: the legacy T5Model ties its LM head to the word embeddings");
  }
  if (c.num_query_groups != c.num_attention_heads) {
    return absl::InvalidArgumentError("model.num_query_groups: legacy cross attention has no grouped-query form");
  }
  return std::unique_ptr<T5Model>(new T5Model(c, options));
}

T5Model::T5Model(const transformer::TransformerConfig& config, const LegacyOptions& options) : config_(config) {
  language_model_ = RegisterModule("language_model", std::make_unique<TransformerLanguageModel>(
                                                         config, options, AttnMaskType::kPadding,
                                                         /*num_tokentypes=*/0, /*add_pooler=*/false,
                                                         /*add_decoder=*/true));
  lm_head_ = RegisterModule("lm_head", std::make_unique<T5LMHead>(config.vocab_size));
}

at::Tensor T5Model::LogitsSbv(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                              const at::Tensor& encoder_mask) const {
  TORCH_CHECK(encoder_ids.dim() == 2 && decoder_ids.dim() == 2 && decoder_ids.size(0) == encoder_ids.size(0),
              "T5Model: encoder and decoder ids must be [b, s] with one batch, got ", encoder_ids.sizes(), " and ",
              decoder_ids.sizes());
  const int64_t b = encoder_ids.size(0), sd = decoder_ids.size(1);
  const at::Tensor padding = encoder_mask.defined() ? encoder_mask : at::ones_like(encoder_ids);
  TORCH_CHECK(padding.sizes() == encoder_ids.sizes(), "T5Model: encoder_mask ", padding.sizes(),
              " must match the encoder ids ", encoder_ids.sizes());
  const at::Tensor enc_mask = BertExtendedAttentionMask(padding);  // [b, 1, se, se]
  const at::Tensor dec_mask = CausalAttentionMask(sd, decoder_ids.device());
  // make_attention_mask(decoder, encoder): every decoder row sees the encoder's real tokens.
  const at::Tensor enc_dec_mask =
      (at::ones({b, sd, 1}, padding.options().dtype(at::kFloat)) * padding.to(at::kFloat).unsqueeze(1))
          .unsqueeze(1)
          .lt(0.5);
  auto positions = [](const at::Tensor& ids) {
    return at::arange(ids.size(1), ids.options().dtype(at::kLong)).unsqueeze(0).expand({ids.size(0), ids.size(1)});
  };
  const at::Tensor encoder_output =
      language_model_->Forward(encoder_ids, positions(encoder_ids), enc_mask, /*tokentype_ids=*/{}).encoder_output;
  const at::Tensor decoder_output =
      language_model_->DecoderForward(decoder_ids, positions(decoder_ids), dec_mask, encoder_output, enc_dec_mask);
  return at::linear(decoder_output, language_model_->embedding().word_embeddings_weight(), lm_head_->bias());
}

at::Tensor T5Model::Logits(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                           const at::Tensor& encoder_mask) const {
  return LogitsSbv(encoder_ids, decoder_ids, encoder_mask).transpose(0, 1);
}

at::Tensor T5Model::Loss(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids, const at::Tensor& encoder_mask,
                         const at::Tensor& labels) const {
  TORCH_CHECK(labels.sizes() == decoder_ids.sizes(), "T5Model: labels ", labels.sizes(),
              " must match the decoder ids ", decoder_ids.sizes());
  const at::Tensor logits = LogitsSbv(encoder_ids, decoder_ids, encoder_mask);  // [sd, b, V]
  const int64_t s = logits.size(0), b = logits.size(1);
  const at::Tensor l = labels.transpose(0, 1).contiguous().view({s * b});
  return at::cross_entropy_loss(logits.to(at::kFloat).reshape({s * b, logits.size(2)}), l, {}, at::Reduction::None)
      .view({s, b})
      .transpose(0, 1)
      .contiguous();
}

}  // namespace megatron::legacy
