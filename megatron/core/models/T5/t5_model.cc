#include "megatron/core/models/T5/t5_model.h"

#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"

namespace megatron::models {

using transformer::PositionEmbedding;
using transformer::TransformerConfig;

T5Model::OutputLayer::OutputLayer(const TransformerConfig& config, bool bias) {
  if (!config.share_embeddings_and_output_weights) {
    weight_ = RegisterParameter("weight",
                                at::empty({config.vocab_size, config.hidden_size}).normal_(0.0, config.init_method_std));
  }
  if (bias) bias_ = RegisterParameter("bias", at::zeros({config.vocab_size}));
}

T5Model::LMHead::LMHead(const TransformerConfig& config, bool bias) {
  output_layer = RegisterModule("output_layer", std::make_unique<OutputLayer>(config, bias));
}

absl::StatusOr<std::unique_ptr<T5Model>> T5Model::Create(const TransformerConfig& config, const T5Options& options) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (config.position_embedding_type != PositionEmbedding::kLearnedAbsolute &&
      config.position_embedding_type != PositionEmbedding::kRelative) {
    return absl::InvalidArgumentError(
        "model.position_embedding_type: T5Model supports learned absolute or relative positions");
  }
  if (options.encoder_num_layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("encoder_num_layers must be >= 0, got ", options.encoder_num_layers));
  }
  if (config.position_embedding_type == PositionEmbedding::kRelative &&
      (options.relative_attention_num_buckets < 4 ||
       options.relative_attention_max_distance <= options.relative_attention_num_buckets / 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "relative_attention_num_buckets must be >= 4 and relative_attention_max_distance > buckets / 2, got ",
        options.relative_attention_num_buckets, " and ", options.relative_attention_max_distance));
  }
  auto backend = transformer::GetBackend(config.backend);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<T5Model>(new T5Model(config, options, *backend));
}

T5Model::T5Model(const TransformerConfig& config, const T5Options& options,
                 std::shared_ptr<const transformer::BackendProvider> backend)
    : config_(config), options_(options), backend_(backend) {
  embedding_ = RegisterModule("embedding", std::make_unique<LanguageModelEmbedding>(config));
  if (config.position_embedding_type == PositionEmbedding::kRelative) {
    encoder_relative_pos_emb_ = RegisterModule(
        "encoder_relative_pos_emb",
        std::make_unique<RelativePositionEmbedding>(RelativeDirection::kBidirectional, config.num_attention_heads,
                                                    options.relative_attention_num_buckets,
                                                    options.relative_attention_max_distance,
                                                    config.init_method_std));
    decoder_relative_pos_emb_ = RegisterModule(
        "decoder_relative_pos_emb",
        std::make_unique<RelativePositionEmbedding>(RelativeDirection::kCausal, config.num_attention_heads,
                                                    options.relative_attention_num_buckets,
                                                    options.relative_attention_max_distance,
                                                    config.init_method_std));
  }
  TransformerConfig encoder_config = config;
  encoder_config.attn_mask_type = transformer::AttnMask::kPadding;
  if (options.encoder_num_layers > 0) encoder_config.num_layers = options.encoder_num_layers;
  TransformerConfig decoder_config = config;
  decoder_config.attn_mask_type = transformer::AttnMask::kCausal;
  encoder_ = RegisterModule("encoder", std::make_unique<transformer::TransformerBlock>(encoder_config, backend));
  decoder_ = RegisterModule("decoder", std::make_unique<transformer::TransformerBlock>(
                                           decoder_config, backend, transformer::ModelParallel{}, transformer::BlockPart{},
                                           transformer::WithCrossAttention::kYes));
  lm_head_ = RegisterModule("lm_head", std::make_unique<LMHead>(config, options.output_layer_bias));
}

at::Tensor T5Model::Positions(const at::Tensor& ids) const {
  const int64_t b = ids.size(0), s = ids.size(1);
  TORCH_CHECK(config_.position_embedding_type != PositionEmbedding::kLearnedAbsolute ||
                  s <= config_.max_position_embeddings,
              "T5Model: sequence of ", s, " tokens exceeds max_position_embeddings ",
              config_.max_position_embeddings);
  return at::arange(s, ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
}

at::Tensor T5Model::KeyMask(const at::Tensor& encoder_ids, const at::Tensor& encoder_mask) const {
  const int64_t b = encoder_ids.size(0), se = encoder_ids.size(1);
  if (!encoder_mask.defined()) return at::zeros({b, 1, 1, se}, encoder_ids.options().dtype(at::kBool));
  TORCH_CHECK(encoder_mask.sizes() == encoder_ids.sizes(), "T5Model: encoder_mask ", encoder_mask.sizes(),
              " must match the encoder ids ", encoder_ids.sizes());
  return encoder_mask.eq(0).view({b, 1, 1, se});
}

at::Tensor T5Model::Encode(const at::Tensor& encoder_ids, const at::Tensor& encoder_mask) const {
  TORCH_CHECK(encoder_ids.dim() == 2, "T5Model: encoder ids must be [b, s], got ", encoder_ids.sizes());
  const int64_t se = encoder_ids.size(1);
  at::Tensor h = embedding_->Forward(encoder_ids, Positions(encoder_ids));
  at::Tensor bias;
  if (encoder_relative_pos_emb_ != nullptr) bias = encoder_relative_pos_emb_->Forward(se, se, h.device());
  return encoder_->Forward(h, at::Tensor(), nullptr, KeyMask(encoder_ids, encoder_mask), bias);
}

at::Tensor T5Model::ForwardToLogits(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                                    const at::Tensor& encoder_mask) const {
  TORCH_CHECK(decoder_ids.dim() == 2 && decoder_ids.size(0) == encoder_ids.size(0),
              "T5Model: decoder ids must be [b, s] with the encoder's batch, got ", decoder_ids.sizes(), " and ",
              encoder_ids.sizes());
  transformer::CrossAttentionInput cross;
  cross.memory = Encode(encoder_ids, encoder_mask);
  cross.memory_mask = KeyMask(encoder_ids, encoder_mask);
  const int64_t sd = decoder_ids.size(1);
  at::Tensor h = embedding_->Forward(decoder_ids, Positions(decoder_ids));
  at::Tensor bias;
  if (decoder_relative_pos_emb_ != nullptr) bias = decoder_relative_pos_emb_->Forward(sd, sd, h.device());
  h = decoder_->Forward(h, at::Tensor(), nullptr, at::Tensor(), bias, &cross);  // [sd, b, h]
  if (options_.scale_decoder_outputs) h = h * (1.0 / std::sqrt(static_cast<double>(config_.hidden_size)));
  const OutputLayer& out = *lm_head_->output_layer;
  const at::Tensor& w = out.weight().defined() ? out.weight() : embedding_->word_embeddings_weight();
  return at::linear(h, w, out.bias().defined() ? std::optional<at::Tensor>(out.bias()) : std::nullopt);
}

at::Tensor T5Model::Logits(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                           const at::Tensor& encoder_mask) const {
  return ForwardToLogits(encoder_ids, decoder_ids, encoder_mask).transpose(0, 1);
}

at::Tensor T5Model::Loss(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                         const at::Tensor& encoder_mask, const at::Tensor& labels) const {
  TORCH_CHECK(labels.sizes() == decoder_ids.sizes(), "T5Model: labels ", labels.sizes(),
              " must match the decoder ids ", decoder_ids.sizes());
  at::Tensor logits = ForwardToLogits(encoder_ids, decoder_ids, encoder_mask);  // [sd, b, V]
  const int64_t s = logits.size(0), b = logits.size(1);
  const at::Tensor flat = labels.transpose(0, 1).reshape({s * b});
  at::Tensor loss = backend_->CrossEntropy(logits.reshape({s * b, config_.vocab_size}), flat.clamp_min(0));
  loss = loss * flat.ge(0).to(loss.scalar_type());
  return loss.view({s, b}).transpose(0, 1);
}

}  // namespace megatron::models
