#include "megatron/core/models/gpt/gpt_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/core/Reduction.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "megatron/core/parallel_state/context_parallel.h"
#include "megatron/core/tensor_parallel/mappings.h"

namespace megatron::models {

using transformer::TransformerConfig;

absl::StatusOr<std::unique_ptr<GPTModel>> GPTModel::Create(const TransformerConfig& config,
                                                           const transformer::ModelParallel& parallel,
                                                           const PipelineStage& stage) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const int layer_end = stage.layer_end < 0 ? config.num_layers : stage.layer_end;
  if (stage.layer_begin < 0 || stage.layer_begin > layer_end || layer_end > config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("GPTModel: pipeline chunk layers [", stage.layer_begin, ", ",
                                                   layer_end, ") are outside model.num_layers=", config.num_layers));
  }
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
  PipelineStage resolved = stage;
  resolved.layer_end = layer_end;
  return std::unique_ptr<GPTModel>(new GPTModel(config, *backend, parallel, resolved));
}

GPTModel::TiedOutputWeight::TiedOutputWeight(int64_t rows, int64_t hidden) {
  weight_ = RegisterParameter("weight", at::zeros({rows, hidden}));
}

GPTModel::GPTModel(const TransformerConfig& config, std::shared_ptr<const transformer::BackendProvider> backend,
                   const transformer::ModelParallel& parallel, const PipelineStage& stage)
    : config_(config), backend_(backend), stage_(stage), parallel_(parallel) {
  // Note [Pipeline initialisation]: the parts this chunk does not hold are drawn and dropped, so the kept ones
  // get the single-process weights.
  auto embedding = std::make_unique<LanguageModelEmbedding>(config, parallel);
  if (stage.pre_process) embedding_ = RegisterModule("embedding", std::move(embedding));
  embedding.reset();
  if (config.position_embedding_type == transformer::PositionEmbedding::kRope) {
    rotary_pos_emb_.emplace(config.kv_channels, config.rotary_base);
  }
  decoder_ = RegisterModule(
      "decoder", std::make_unique<transformer::TransformerBlock>(
                     config, backend, parallel,
                     transformer::BlockPart{stage.layer_begin, stage.layer_end, stage.post_process}));
  if (config.share_embeddings_and_output_weights) {
    if (stage.post_process && !stage.pre_process) {
      tied_output_ = RegisterModule("output_layer", std::make_unique<TiedOutputWeight>(
                                                        config.vocab_size / parallel.tp_size(), config.hidden_size));
    }
    return;
  }
  // Drawn on every chunk so that the generator ends where the whole model's construction leaves it.
  if (parallel.enabled()) {
    // Only its weight is used (Project applies the input mapping itself, as for the tied weight).
    auto layer = std::make_unique<tensor_parallel::ColumnParallelLinear>(
        config.hidden_size, config.vocab_size, /*bias=*/false, tensor_parallel::GatherOutput::kNo,
        transformer::InitMethod{config.init_method_std}, parallel.tp);
    if (stage.post_process) output_layer_tp_ = RegisterModule("output_layer", std::move(layer));
  } else {
    auto layer = std::make_unique<transformer::Linear>(config.hidden_size, config.vocab_size, /*bias=*/false,
                                                       transformer::InitMethod{config.init_method_std});
    if (stage.post_process) output_layer_ = RegisterModule("output_layer", std::move(layer));
  }
}

at::Tensor GPTModel::ContextParallelPositions(int64_t s_local, const at::Device& device) const {
  const std::vector<int64_t> p =
      parallel_state::ZigzagPositions(s_local * parallel_.cp_size(), parallel_.cp_size(), parallel_.cp_rank());
  return at::tensor(p, at::TensorOptions().dtype(at::kLong)).to(device);
}

at::Tensor GPTModel::RotaryFreqs(int64_t s_local, int64_t offset, const at::Device& device) const {
  if (parallel_.cp_size() == 1) return rotary_pos_emb_->Forward(s_local, offset, device);
  // RoPE for the whole sequence, then this rank's zigzag positions (Megatron's get_pos_emb_on_this_cp_rank).
  const at::Tensor full = rotary_pos_emb_->Forward(s_local * parallel_.cp_size(), 0, device);
  return full.index_select(0, ContextParallelPositions(s_local, device));
}

at::Tensor GPTModel::Embed(const at::Tensor& input_ids, const at::Tensor& position_ids, int64_t offset) const {
  TORCH_CHECK(input_ids.dim() == 2, "GPTModel: input_ids must be [b, s], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  TORCH_CHECK(offset + s <= config_.max_position_embeddings ||
                  config_.position_embedding_type != transformer::PositionEmbedding::kLearnedAbsolute,
              "GPTModel: sequence of ", offset + s, " positions exceeds max_position_embeddings ",
              config_.max_position_embeddings);
  at::Tensor positions = position_ids;
  if (!positions.defined()) {
    positions = parallel_.cp_size() > 1
                    ? ContextParallelPositions(s, input_ids.device()).unsqueeze(0).expand({b, s})
                    : at::arange(offset, offset + s, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({b, s});
  }
  return embedding_->Forward(input_ids, positions);
}

const at::Tensor& GPTModel::OutputWeight() const {
  if (output_layer_tp_ != nullptr) return output_layer_tp_->weight();
  if (output_layer_ != nullptr) return output_layer_->weight();
  if (tied_output_ != nullptr) return tied_output_->weight();
  return embedding_->word_embeddings_weight();
}

at::Tensor GPTModel::Project(const at::Tensor& h) const {
  if (parallel_.enabled()) {
    // Megatron's output ColumnParallelLinear: gather the sequence (SP) or copy to the TP region, then the
    // vocab-shard projection; the logits stay vocab-parallel.
    const at::Tensor input = parallel_.sequence_parallel
                                 ? tensor_parallel::GatherFromSequenceParallelRegion(h, parallel_.tp)
                                 : tensor_parallel::CopyToTensorParallelRegion(h, parallel_.tp);
    return at::linear(input, OutputWeight());  // [s, b, V/tp]
  }
  return at::linear(h, OutputWeight());  // [s, b, V]
}

at::Tensor GPTModel::ForwardToLogits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                     transformer::KVCache* cache) const {
  TORCH_CHECK(stage_.whole(config_.num_layers), "GPTModel: Logits/Loss need the whole model; this is a pipeline "
              "chunk (use StageForward)");
  const int64_t offset = cache != nullptr ? cache->seq_len : 0;
  return HiddenToLogits(Embed(input_ids, position_ids, offset), cache);
}

at::Tensor GPTModel::HiddenToLogits(at::Tensor h, transformer::KVCache* cache) const {
  TORCH_CHECK(stage_.whole(config_.num_layers), "GPTModel: Logits/Loss need the whole model; this is a pipeline "
              "chunk (use StageForward)");
  // The sequence length of this rank's tokens (h is [s/tp, b, h] after the embedding under sequence parallelism).
  const int64_t s = h.size(0) * (parallel_.enabled() && parallel_.sequence_parallel ? parallel_.tp_size() : 1);
  const int64_t offset = cache != nullptr ? cache->seq_len : 0;
  at::Tensor freqs;
  if (rotary_pos_emb_) freqs = RotaryFreqs(s, offset, h.device());
  h = decoder_->Forward(h, freqs, cache);
  if (cache != nullptr) cache->seq_len += s;
  return Project(h);
}

at::Tensor GPTModel::EmbedTokens(const at::Tensor& input_ids, const at::Tensor& position_ids) const {
  TORCH_CHECK(!parallel_.enabled(), "GPTModel::EmbedTokens: the decoder_input path has no tensor parallelism yet");
  TORCH_CHECK(stage_.whole(config_.num_layers), "GPTModel::EmbedTokens needs the whole model");
  return Embed(input_ids, position_ids, 0);
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
  TORCH_CHECK(labels.dim() == 2 && labels.size(0) == decoder_input.size(1) && labels.size(1) == decoder_input.size(0),
              "GPTModel: labels ", labels.sizes(), " must be [b, s] for decoder_input ", decoder_input.sizes());
  return LossFromLogits(HiddenToLogits(decoder_input, nullptr), labels);
}

at::Tensor GPTModel::StageForward(const at::Tensor& input, const at::Tensor& position_ids,
                                  const at::Tensor& labels) const {
  at::Tensor h;
  int64_t s = 0;
  if (stage_.pre_process) {
    h = Embed(input, position_ids, 0);
    s = input.size(1);
  } else {
    TORCH_CHECK(input.dim() == 3 && input.size(2) == config_.hidden_size,
                "GPTModel::StageForward: a chunk without the embedding takes hidden states [s, b, ",
                config_.hidden_size, "], got ", input.sizes());
    h = input;
    s = input.size(0) * (parallel_.enabled() && parallel_.sequence_parallel ? parallel_.tp_size() : 1);
  }
  at::Tensor freqs;
  if (rotary_pos_emb_) freqs = RotaryFreqs(s, 0, h.device());
  h = decoder_->Forward(h, freqs, nullptr);
  if (!stage_.post_process) return h;
  TORCH_CHECK(labels.defined() && labels.dim() == 2 && labels.size(1) == s,
              "GPTModel::StageForward: the last chunk needs labels [b, ", s, "], got ",
              labels.defined() ? labels.sizes() : at::IntArrayRef{});
  return LossFromLogits(Project(h), labels);
}

at::Tensor GPTModel::SharedEmbeddingWeight() const {
  if (!config_.share_embeddings_and_output_weights || stage_.pre_process == stage_.post_process) return {};
  return stage_.pre_process ? embedding_->word_embeddings_weight() : tied_output_->weight();
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
  if (parallel_.enabled()) {  // logits [s, b, V/tp]; LOCAL: Megatron's ATen algorithm, FUSED: the fused kernels
    at::Tensor loss = backend_->VocabParallelCrossEntropy(logits, labels.transpose(0, 1), parallel_.tp);
    return loss.transpose(0, 1);  // [b, s]
  }
  // logits [s, b, V], compute dtype
  const int64_t s = logits.size(0), b = logits.size(1);
  at::Tensor loss = backend_->CrossEntropy(logits.reshape({s * b, config_.vocab_size}),
                                           labels.transpose(0, 1).reshape({s * b}));
  return loss.view({s, b}).transpose(0, 1);  // [b, s]
}

}  // namespace megatron::models
