#include "megatron/core/models/gpt/gpt_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>
#include <ATen/core/Reduction.h>

namespace megatron::models {

using transformer::TransformerConfig;

absl::StatusOr<std::unique_ptr<GPTModel>> GPTModel::Create(const TransformerConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  auto backend = transformer::GetBackend(config.backend);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<GPTModel>(new GPTModel(config, *backend));
}

GPTModel::GPTModel(const TransformerConfig& config, std::shared_ptr<const transformer::BackendProvider> backend)
    : config_(config) {
  embedding_ = RegisterModule("embedding", std::make_unique<LanguageModelEmbedding>(config));
  if (config.position_embedding_type == transformer::PositionEmbedding::kRope) {
    rotary_pos_emb_.emplace(config.kv_channels, config.rotary_base);
  }
  decoder_ = RegisterModule("decoder", std::make_unique<transformer::TransformerBlock>(config, backend));
  if (!config.share_embeddings_and_output_weights) {
    output_layer_ = RegisterModule("output_layer",
                                   std::make_unique<transformer::Linear>(config.hidden_size, config.vocab_size,
                                                                         /*bias=*/false,
                                                                         transformer::InitMethod{config.init_method_std}));
  }
}

at::Tensor GPTModel::ForwardToLogits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                     transformer::KVCache* cache) const {
  TORCH_CHECK(input_ids.dim() == 2, "GPTModel: input_ids must be [b, s], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  const int64_t offset = cache != nullptr ? cache->seq_len : 0;
  TORCH_CHECK(offset + s <= config_.max_position_embeddings ||
                  config_.position_embedding_type != transformer::PositionEmbedding::kLearnedAbsolute,
              "GPTModel: sequence of ", offset + s, " positions exceeds max_position_embeddings ",
              config_.max_position_embeddings);
  at::Tensor positions = position_ids;
  if (!positions.defined()) {
    positions = at::arange(offset, offset + s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  }
  at::Tensor h = embedding_->Forward(input_ids, positions);
  at::Tensor freqs;
  if (rotary_pos_emb_) freqs = rotary_pos_emb_->Forward(s, offset, input_ids.device());
  h = decoder_->Forward(h, freqs, cache);
  if (cache != nullptr) cache->seq_len += s;
  const at::Tensor& w = output_layer_ != nullptr ? output_layer_->weight() : embedding_->word_embeddings_weight();
  return at::linear(h, w);  // [s, b, V]
}

at::Tensor GPTModel::Logits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                            transformer::KVCache* cache) const {
  return ForwardToLogits(input_ids, position_ids, cache).transpose(0, 1);
}

at::Tensor GPTModel::Loss(const at::Tensor& input_ids, const at::Tensor& position_ids,
                          const at::Tensor& labels) const {
  TORCH_CHECK(labels.sizes() == input_ids.sizes(), "GPTModel: labels ", labels.sizes(), " must match input_ids ",
              input_ids.sizes());
  at::Tensor logits = ForwardToLogits(input_ids, position_ids, nullptr).to(at::kFloat);  // [s, b, V]
  const int64_t s = logits.size(0), b = logits.size(1);
  at::Tensor loss = at::cross_entropy_loss(logits.reshape({s * b, config_.vocab_size}),
                                           labels.transpose(0, 1).reshape({s * b}), /*weight=*/{},
                                           at::Reduction::None);
  return loss.view({s, b}).transpose(0, 1);  // [b, s]
}

}  // namespace megatron::models
