#include "legacy/model/language_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tanh.h>

namespace megatron::legacy {

using transformer::TransformerConfig;

Embedding::Table::Table(int64_t rows, int64_t dim, double std) {
  weight_ = RegisterParameter("weight", at::empty({rows, dim}).normal_(0.0, std));
}

Embedding::Embedding(const TransformerConfig& config, int num_tokentypes) : config_(config) {
  word_embeddings_ = RegisterModule(
      "word_embeddings", std::make_unique<Table>(config.vocab_size, config.hidden_size, config.init_method_std));
  position_embeddings_ = RegisterModule(
      "position_embeddings",
      std::make_unique<Table>(config.max_position_embeddings, config.hidden_size, config.init_method_std));
  if (num_tokentypes > 0) {
    tokentype_embeddings_ = RegisterModule(
        "tokentype_embeddings", std::make_unique<Table>(num_tokentypes, config.hidden_size, config.init_method_std));
  }
}

at::Tensor Embedding::Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                              const at::Tensor& tokentype_ids) const {
  TORCH_CHECK(input_ids.dim() == 2 && position_ids.sizes() == input_ids.sizes(),
              "Embedding: input_ids and position_ids must both be [b, s], got ", input_ids.sizes(), " and ",
              position_ids.sizes());
  TORCH_CHECK(input_ids.size(1) <= config_.max_position_embeddings, "Embedding: sequence of ", input_ids.size(1),
              " tokens exceeds max_position_embeddings ", config_.max_position_embeddings);
  TORCH_CHECK(tokentype_ids.defined() == (tokentype_embeddings_ != nullptr),
              "Embedding: tokentype_ids must be given exactly when the model has token types");
  at::Tensor h = at::embedding(word_embeddings_->weight(), input_ids) +
                 at::embedding(position_embeddings_->weight(), position_ids);
  if (tokentype_embeddings_ != nullptr) {
    TORCH_CHECK(tokentype_ids.sizes() == input_ids.sizes(), "Embedding: tokentype_ids ", tokentype_ids.sizes(),
                " must match input_ids ", input_ids.sizes());
    h = h + at::embedding(tokentype_embeddings_->weight(), tokentype_ids);
  }
  h = h.transpose(0, 1).contiguous();  // [b, s, h] -> [s, b, h]
  return at::dropout(h, config_.hidden_dropout, training());
}

Pooler::Pooler(const TransformerConfig& config) {
  dense_ = RegisterModule("dense", std::make_unique<transformer::Linear>(
                                       config.hidden_size, config.hidden_size, /*bias=*/true,
                                       transformer::InitMethod{config.init_method_std}));
}

at::Tensor Pooler::Forward(const at::Tensor& hidden, int64_t sequence_index) const {
  return at::tanh(dense_->Forward(hidden[sequence_index]));
}

TransformerLanguageModel::TransformerLanguageModel(const TransformerConfig& config, const LegacyOptions& options,
                                                   AttnMaskType encoder_attn_mask_type, int num_tokentypes,
                                                   bool add_pooler, bool add_decoder) {
  embedding_ = RegisterModule("embedding", std::make_unique<Embedding>(config, num_tokentypes));
  encoder_ = RegisterModule("encoder", std::make_unique<ParallelTransformer>(config, options, encoder_attn_mask_type));
  if (add_decoder) {
    decoder_ = RegisterModule("decoder", std::make_unique<ParallelTransformer>(config, options, AttnMaskType::kCausal,
                                                                               LayerType::kDecoder));
  }
  if (add_pooler) pooler_ = RegisterModule("pooler", std::make_unique<Pooler>(config));
  if (!config.share_embeddings_and_output_weights) {
    output_layer_ = RegisterModule("output_layer", std::make_unique<transformer::Linear>(
                                                       config.hidden_size, config.vocab_size, /*bias=*/false,
                                                       transformer::InitMethod{config.init_method_std}));
  }
}

LanguageModelOutput TransformerLanguageModel::Forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                                      const at::Tensor& attention_mask,
                                                      const at::Tensor& tokentype_ids) const {
  LanguageModelOutput out;
  out.encoder_output = encoder_->Forward(embedding_->Forward(input_ids, position_ids, tokentype_ids), attention_mask);
  if (pooler_ != nullptr) out.pooled = pooler_->Forward(out.encoder_output);
  return out;
}

at::Tensor TransformerLanguageModel::DecoderForward(const at::Tensor& decoder_ids, const at::Tensor& position_ids,
                                                    const at::Tensor& decoder_mask, const at::Tensor& encoder_output,
                                                    const at::Tensor& enc_dec_mask) const {
  TORCH_CHECK(decoder_ != nullptr, "TransformerLanguageModel: built without a decoder (add_decoder)");
  const at::Tensor h = embedding_->Forward(decoder_ids, position_ids, /*tokentype_ids=*/{});
  return decoder_->Forward(h, decoder_mask, encoder_output, enc_dec_mask);
}

}  // namespace megatron::legacy
