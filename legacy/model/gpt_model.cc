#include "legacy/model/gpt_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>

namespace megatron::legacy {

at::Tensor CausalAttentionMask(int64_t s, const at::Device& device) {
  // torch.tril(ones(s, s)) < 0.5, viewed [1, 1, s, s].
  return at::ones({s, s}, at::TensorOptions().dtype(at::kFloat).device(device)).tril().lt(0.5).view({1, 1, s, s});
}

absl::StatusOr<std::unique_ptr<GPTModel>> GPTModel::Create(const transformer::TransformerConfig& config,
                                                           const LegacyOptions& options) {
  if (absl::Status s = ValidateLegacyConfig(config, options); !s.ok()) return s;
  if (config.attn_mask_type != transformer::AttnMask::kCausal) {
    return absl::InvalidArgumentError("model.attn_mask_type: GPTModel is causal");
  }
  return std::unique_ptr<GPTModel>(new GPTModel(config, options));
}

GPTModel::GPTModel(const transformer::TransformerConfig& config, const LegacyOptions& options) : config_(config) {
  language_model_ = RegisterModule("language_model", std::make_unique<TransformerLanguageModel>(
                                                         config, options, AttnMaskType::kCausal,
                                                         /*num_tokentypes=*/0, /*add_pooler=*/false));
}

at::Tensor GPTModel::LogitsSbv(const at::Tensor& input_ids, const at::Tensor& position_ids,
                               const at::Tensor& attention_mask) const {
  TORCH_CHECK(input_ids.dim() == 2, "GPTModel: input_ids must be [b, s], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  const at::Tensor positions = position_ids.defined()
                                   ? position_ids
                                   : at::arange(s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  const at::Tensor mask = attention_mask.defined() ? attention_mask : CausalAttentionMask(s, input_ids.device());
  const at::Tensor h = language_model_->Forward(input_ids, positions, mask, /*tokentype_ids=*/{}).encoder_output;
  // parallel_lm_logits (TP = 1): a plain GEMM with the (tied or untied) output weight, no bias.
  const at::Tensor weight = config_.share_embeddings_and_output_weights
                                ? language_model_->embedding().word_embeddings_weight()
                                : language_model_->output_layer_weight();
  return at::linear(h, weight);
}

at::Tensor GPTModel::Logits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                            const at::Tensor& attention_mask) const {
  return LogitsSbv(input_ids, position_ids, attention_mask).transpose(0, 1);
}

at::Tensor GPTModel::Loss(const at::Tensor& input_ids, const at::Tensor& position_ids,
                          const at::Tensor& attention_mask, const at::Tensor& labels) const {
  TORCH_CHECK(labels.sizes() == input_ids.sizes(), "GPTModel: labels ", labels.sizes(), " must match input_ids ",
              input_ids.sizes());
  const at::Tensor logits = LogitsSbv(input_ids, position_ids, attention_mask);  // [s, b, V]
  const int64_t s = logits.size(0), b = logits.size(1);
  // post_language_model_processing: labels to [s, b], cross entropy of float(logits), back to [b, s].
  const at::Tensor l = labels.transpose(0, 1).contiguous().view({s * b});
  const at::Tensor loss = at::cross_entropy_loss(logits.to(at::kFloat).reshape({s * b, logits.size(2)}), l, {},
                                                 at::Reduction::None);
  return loss.view({s, b}).transpose(0, 1).contiguous();
}

}  // namespace megatron::legacy
