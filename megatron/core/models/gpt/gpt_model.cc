#include "megatron/core/models/gpt/gpt_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>
#include <ATen/core/Reduction.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "megatron/core/tensor_parallel/cross_entropy.h"
#include "megatron/core/tensor_parallel/mappings.h"

namespace megatron::models {

using transformer::TransformerConfig;

absl::StatusOr<std::unique_ptr<GPTModel>> GPTModel::Create(const TransformerConfig& config,
                                                           const transformer::ModelParallel& parallel) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (parallel.enabled()) {
    const int tp = parallel.tp_size();
    const std::pair<const char*, int> fields[] = {{"model.num_attention_heads", config.num_attention_heads},
                                                  {"model.num_query_groups", config.num_query_groups},
                                                  {"model.ffn_hidden_size", config.ffn_hidden_size},
                                                  {"model.vocab_size", config.vocab_size}};
    for (const auto& [name, value] : fields) {
      if (value % tp != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, "=", value, " is not divisible by the tensor-parallel size ", tp,
            std::string(name) == "model.vocab_size" ? " (pad it with parallel_state::PaddedVocabSize)" : ""));
      }
    }
  }
  auto backend = transformer::GetBackend(config.backend);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<GPTModel>(new GPTModel(config, *backend, parallel));
}

GPTModel::GPTModel(const TransformerConfig& config, std::shared_ptr<const transformer::BackendProvider> backend,
                   const transformer::ModelParallel& parallel)
    : config_(config), backend_(backend), parallel_(parallel) {
  embedding_ = RegisterModule("embedding", std::make_unique<LanguageModelEmbedding>(config, parallel));
  if (config.position_embedding_type == transformer::PositionEmbedding::kRope) {
    rotary_pos_emb_.emplace(config.kv_channels, config.rotary_base);
  }
  decoder_ = RegisterModule("decoder", std::make_unique<transformer::TransformerBlock>(config, backend, parallel));
  if (!config.share_embeddings_and_output_weights && parallel.enabled()) {
    // Only its weight is used (ForwardToLogits applies the input mapping itself, as for the tied weight).
    output_layer_tp_ = RegisterModule(
        "output_layer", std::make_unique<tensor_parallel::ColumnParallelLinear>(
                            config.hidden_size, config.vocab_size, /*bias=*/false,
                            tensor_parallel::GatherOutput::kNo, transformer::InitMethod{config.init_method_std},
                            parallel.tp));
  } else if (!config.share_embeddings_and_output_weights) {
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
  return HiddenToLogits(embedding_->Forward(input_ids, positions), cache);
}

at::Tensor GPTModel::HiddenToLogits(at::Tensor h, transformer::KVCache* cache) const {
  const int64_t s = h.size(0);
  const int64_t offset = cache != nullptr ? cache->seq_len : 0;
  at::Tensor freqs;
  if (rotary_pos_emb_) freqs = rotary_pos_emb_->Forward(s, offset, h.device());
  h = decoder_->Forward(h, freqs, cache);
  if (cache != nullptr) cache->seq_len += s;
  if (parallel_.enabled()) {
    // Megatron's output ColumnParallelLinear: gather the sequence (SP) or copy to the TP region, then the
    // vocab-shard projection; the logits stay vocab-parallel.
    const at::Tensor& w = output_layer_tp_ != nullptr ? output_layer_tp_->weight()
                                                      : embedding_->word_embeddings_weight();
    const at::Tensor input = parallel_.sequence_parallel
                                 ? tensor_parallel::GatherFromSequenceParallelRegion(h, parallel_.tp)
                                 : tensor_parallel::CopyToTensorParallelRegion(h, parallel_.tp);
    return at::linear(input, w);  // [s, b, V/tp]
  }
  const at::Tensor& w = output_layer_ != nullptr ? output_layer_->weight() : embedding_->word_embeddings_weight();
  return at::linear(h, w);  // [s, b, V]
}

at::Tensor GPTModel::Logits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                            transformer::KVCache* cache) const {
  at::Tensor logits = ForwardToLogits(input_ids, position_ids, cache);
  if (parallel_.enabled()) logits = tensor_parallel::GatherFromTensorParallelRegion(logits, parallel_.tp);
  return logits.transpose(0, 1);
}

std::vector<std::pair<std::string, at::Tensor>> GPTModel::SequenceParallelParameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (!parallel_.enabled() || !parallel_.sequence_parallel) return out;
  for (auto& [name, p] : NamedParameters()) {
    const bool norm = name.find("layernorm.") != std::string::npos;
    const bool row_bias = absl::EndsWith(name, "linear_proj.bias") || absl::EndsWith(name, "linear_fc2.bias");
    if (norm || row_bias) out.emplace_back(name, p);
  }
  return out;
}

at::Tensor GPTModel::Loss(const at::Tensor& input_ids, const at::Tensor& position_ids,
                          const at::Tensor& labels) const {
  TORCH_CHECK(labels.sizes() == input_ids.sizes(), "GPTModel: labels ", labels.sizes(), " must match input_ids ",
              input_ids.sizes());
  return LossFromLogits(ForwardToLogits(input_ids, position_ids, nullptr), labels);
}

at::Tensor GPTModel::LossFromLogits(const at::Tensor& logits, const at::Tensor& labels) const {
  const int64_t s = logits.size(0), b = logits.size(1);
  TORCH_CHECK(labels.dim() == 2 && labels.size(0) == b && labels.size(1) == s, "GPTModel: labels ", labels.sizes(),
              " must be [b, s] = [", b, ", ", s, "]");
  if (parallel_.enabled()) {
    return tensor_parallel::VocabParallelCrossEntropy(logits, labels.transpose(0, 1), parallel_.tp).transpose(0, 1);
  }
  at::Tensor loss = backend_->CrossEntropy(logits.reshape({s * b, config_.vocab_size}),
                                           labels.transpose(0, 1).reshape({s * b}));
  return loss.view({s, b}).transpose(0, 1);  // [b, s]
}

at::Tensor GPTModel::Embed(const at::Tensor& input_ids, const at::Tensor& position_ids) const {
  TORCH_CHECK(!parallel_.enabled(), "GPTModel::Embed: the decoder_input path has no tensor parallelism yet");
  TORCH_CHECK(input_ids.dim() == 2, "GPTModel: input_ids must be [b, s], got ", input_ids.sizes());
  at::Tensor positions = position_ids;
  if (!positions.defined()) {
    positions = at::arange(input_ids.size(1), input_ids.options().dtype(at::kLong)).unsqueeze(0).expand_as(input_ids);
  }
  return embedding_->Forward(input_ids, positions);
}

at::Tensor GPTModel::LogitsFromEmbeddings(const at::Tensor& decoder_input, transformer::KVCache* cache) const {
  TORCH_CHECK(!parallel_.enabled(), "GPTModel: the decoder_input path has no tensor parallelism yet");
  TORCH_CHECK(decoder_input.dim() == 3 && decoder_input.size(2) == config_.hidden_size,
              "GPTModel: decoder_input must be [s, b, ", config_.hidden_size, "], got ", decoder_input.sizes());
  return HiddenToLogits(decoder_input, cache).transpose(0, 1);
}

at::Tensor GPTModel::LossFromEmbeddings(const at::Tensor& decoder_input, const at::Tensor& labels) const {
  TORCH_CHECK(!parallel_.enabled(), "GPTModel: the decoder_input path has no tensor parallelism yet");
  TORCH_CHECK(decoder_input.dim() == 3 && decoder_input.size(2) == config_.hidden_size,
              "GPTModel: decoder_input must be [s, b, ", config_.hidden_size, "], got ", decoder_input.sizes());
  return LossFromLogits(HiddenToLogits(decoder_input, nullptr), labels);
}

}  // namespace megatron::models
