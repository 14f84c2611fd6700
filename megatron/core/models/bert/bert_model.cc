#include "megatron/core/models/bert/bert_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"

namespace megatron::models {

using transformer::TransformerConfig;

BertModel::Pooler::Pooler(const TransformerConfig& config) {
  dense_ = RegisterModule("dense", std::make_unique<transformer::Linear>(
                                       config.hidden_size, config.hidden_size, /*bias=*/true,
                                       transformer::InitMethod{config.init_method_std}));
}

at::Tensor BertModel::Pooler::Forward(const at::Tensor& hidden) const {
  return at::tanh(dense_->Forward(hidden[0]));
}

BertModel::LMHead::LMHead(const TransformerConfig& config, const transformer::BackendProvider& backend) {
  dense_ = RegisterModule("dense", std::make_unique<transformer::Linear>(
                                       config.hidden_size, config.hidden_size, /*bias=*/true,
                                       transformer::InitMethod{config.init_method_std}));
  layer_norm_ = RegisterModule("layer_norm", backend.MakeNorm(config, config.hidden_size));
}

at::Tensor BertModel::LMHead::Forward(const at::Tensor& hidden) const {
  // Megatron's BertLMHead uses the exact (erf) GeLU whatever the encoder's activation.
  return layer_norm_->Forward(at::gelu(dense_->Forward(hidden)));
}

BertModel::OutputBias::OutputBias(int64_t vocab_size) {
  bias_ = RegisterParameter("bias", at::zeros({vocab_size}));
}

absl::StatusOr<std::unique_ptr<BertModel>> BertModel::Create(const TransformerConfig& config,
                                                             const BertOptions& options) {
  TransformerConfig c = config;
  c.attn_mask_type = transformer::AttnMask::kPadding;
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  if (c.position_embedding_type != transformer::PositionEmbedding::kLearnedAbsolute) {
    return absl::InvalidArgumentError(
        "model.position_embedding_type: BertModel supports learned absolute position embeddings only");
  }
  if (!c.share_embeddings_and_output_weights) {
    return absl::InvalidArgumentError(
        "model.share_embeddings_and_output_weights: BertModel ties its output layer to the word embeddings "
        "(set it to true)");
  }
  if (options.num_tokentypes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokentypes must be >= 0, got ", options.num_tokentypes));
  }
  auto backend = transformer::GetBackend(c.backend);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<BertModel>(new BertModel(c, options, *backend));
}

BertModel::BertModel(const TransformerConfig& config, const BertOptions& options,
                     std::shared_ptr<const transformer::BackendProvider> backend)
    : config_(config), options_(options), backend_(backend) {
  EmbeddingOptions embedding_options;
  embedding_options.num_tokentypes = options.num_tokentypes;
  embedding_options.layernorm = options.embedding_layernorm;
  embedding_ = RegisterModule("embedding", std::make_unique<LanguageModelEmbedding>(
                                               config, transformer::ModelParallel{}, embedding_options));
  encoder_ = RegisterModule("encoder", std::make_unique<transformer::TransformerBlock>(config, backend));
  if (options.add_binary_head) pooler_ = RegisterModule("pooler", std::make_unique<Pooler>(config));
  lm_head_ = RegisterModule("lm_head", std::make_unique<LMHead>(config, *backend));
  output_layer_ = RegisterModule("output_layer", std::make_unique<OutputBias>(config.vocab_size));
  if (options.add_binary_head) {
    binary_head_ = RegisterModule("binary_head", std::make_unique<transformer::Linear>(
                                                     config.hidden_size, 2, /*bias=*/true,
                                                     transformer::InitMethod{config.init_method_std}));
  }
}

BertOutput BertModel::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                              const at::Tensor& tokentype_ids, const at::Tensor& lm_labels) const {
  TORCH_CHECK(input_ids.dim() == 2, "BertModel: input_ids must be [b, s], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  TORCH_CHECK(s <= config_.max_position_embeddings, "BertModel: sequence of ", s,
              " tokens exceeds max_position_embeddings ", config_.max_position_embeddings);
  at::Tensor masked;  // [b, 1, 1, s], true = a padded key
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.sizes() == input_ids.sizes(), "BertModel: attention_mask ", attention_mask.sizes(),
                " must match input_ids ", input_ids.sizes());
    masked = attention_mask.eq(0).view({b, 1, 1, s});
  } else {
    masked = at::zeros({b, 1, 1, s}, input_ids.options().dtype(at::kBool));
  }
  const at::Tensor positions = at::arange(s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  at::Tensor h = embedding_->Forward(input_ids, positions, tokentype_ids);
  h = encoder_->Forward(h, at::Tensor(), nullptr, masked);  // [s, b, h]

  BertOutput out;
  if (binary_head_ != nullptr) out.binary_logits = binary_head_->Forward(pooler_->Forward(h));
  at::Tensor logits = at::linear(lm_head_->Forward(h), embedding_->word_embeddings_weight(),
                                 output_layer_->bias());  // [s, b, V]
  if (!lm_labels.defined()) {
    out.lm = logits.transpose(0, 1);
    return out;
  }
  TORCH_CHECK(lm_labels.sizes() == input_ids.sizes(), "BertModel: lm_labels ", lm_labels.sizes(),
              " must match input_ids ", input_ids.sizes());
  const at::Tensor labels = lm_labels.transpose(0, 1).reshape({s * b});
  const at::Tensor valid = labels.ge(0);
  at::Tensor loss = backend_->CrossEntropy(logits.reshape({s * b, config_.vocab_size}), labels.clamp_min(0));
  loss = loss * valid.to(loss.scalar_type());
  out.lm = loss.view({s, b}).transpose(0, 1);  // [b, s]
  return out;
}

at::Tensor BertPretrainingLoss(const at::Tensor& lm_loss, const at::Tensor& loss_mask,
                               const at::Tensor& binary_logits, const at::Tensor& sentence_order) {
  TORCH_CHECK(lm_loss.sizes() == loss_mask.sizes(), "BertPretrainingLoss: lm_loss ", lm_loss.sizes(),
              " and loss_mask ", loss_mask.sizes(), " must have the same shape");
  const at::Tensor mask = loss_mask.to(at::kFloat);
  at::Tensor loss = (lm_loss.to(at::kFloat) * mask).sum() / mask.sum();
  if (binary_logits.defined()) {
    TORCH_CHECK(sentence_order.defined() && sentence_order.dim() == 1 &&
                    sentence_order.size(0) == binary_logits.size(0),
                "BertPretrainingLoss: sentence_order must be [", binary_logits.size(0), "]");
    loss = loss + at::cross_entropy_loss(binary_logits.to(at::kFloat), sentence_order);
  }
  return loss;
}

}  // namespace megatron::models
