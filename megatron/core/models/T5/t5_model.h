// T5Model (Megatron's models/T5/t5_model.py): one shared embedding; a bidirectional encoder with a padding
// mask; a causal decoder whose layers add cross attention to the encoder output; an output layer tied to the
// word embeddings (lm_head.output_layer).
//
//   Logits(encoder_ids [b,se], decoder_ids [b,sd], encoder_mask [b,se])        -> [b, sd, V]
//   Loss(encoder_ids, decoder_ids, encoder_mask, labels [b,sd])                -> per-token loss [b, sd] fp32
// encoder_mask: nonzero = a real token, 0 = padding (or undefined: no padding); it masks the encoder's keys in
// encoder self attention and in every decoder cross attention. A negative label gives loss 0 (no target).
//
// Positions (config.position_embedding_type): kLearnedAbsolute (Megatron's default; the shared embedding adds
// positions 0.. to each side) or kRelative (T5's bucketed bias, computed once per side and shared by all its
// layers: encoder_relative_pos_emb bidirectional, decoder_relative_pos_emb causal).
//
// Parameters (Megatron core names): embedding.*, encoder_relative_pos_emb.relative_attention_bias.weight
// [buckets, heads], decoder_relative_pos_emb.*, encoder.layers.N.* (+ encoder.final_layernorm),
// decoder.layers.N.{input_layernorm, self_attention, pre_cross_attn_layernorm, cross_attention.{linear_q,
// linear_kv, linear_proj}, pre_mlp_layernorm, mlp} (+ decoder.final_layernorm), lm_head.output_layer.bias [V]
// (T5Options::output_layer_bias) and lm_head.output_layer.weight [V, h] when untied.
//
// HuggingFace's T5 is this model with: RMS norm, no linear biases, relative positions, no attention scaling
// (config.softmax_scale = 1), no output bias, and (tied) the decoder output scaled by hidden^-0.5 before the
// output layer (T5Options::scale_decoder_outputs). Single process (no tensor parallelism yet).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/models/common/language_model_embedding.h"
#include "megatron/core/models/common/relative_pos_embedding.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/transformer_block.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {

struct T5Options {
  int encoder_num_layers = 0;  // 0: config.num_layers (the decoder's)
  int relative_attention_num_buckets = 32;
  int relative_attention_max_distance = 128;
  bool output_layer_bias = true;       // Megatron's T5LMHead: a bias when the output is tied
  bool scale_decoder_outputs = false;  // HuggingFace T5 (tied): decoder output * hidden^-0.5
};

class T5Model : public transformer::MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<T5Model>> Create(const transformer::TransformerConfig& config,
                                                         const T5Options& options = {});

  // The encoder output [se, b, h].
  at::Tensor Encode(const at::Tensor& encoder_ids, const at::Tensor& encoder_mask) const;
  at::Tensor Logits(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                    const at::Tensor& encoder_mask) const;
  at::Tensor Loss(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids, const at::Tensor& encoder_mask,
                  const at::Tensor& labels) const;

  const transformer::TransformerConfig& config() const { return config_; }
  const T5Options& options() const { return options_; }

 private:
  T5Model(const transformer::TransformerConfig& config, const T5Options& options,
          std::shared_ptr<const transformer::BackendProvider> backend);
  at::Tensor ForwardToLogits(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                             const at::Tensor& encoder_mask) const;  // [sd, b, V]
  at::Tensor Positions(const at::Tensor& ids) const;
  at::Tensor KeyMask(const at::Tensor& encoder_ids, const at::Tensor& encoder_mask) const;  // [b, 1, 1, se]

  // lm_head.output_layer: the untied weight and/or the bias.
  class OutputLayer : public transformer::MegatronModule {
   public:
    OutputLayer(const transformer::TransformerConfig& config, bool bias);
    const at::Tensor& weight() const { return weight_; }
    const at::Tensor& bias() const { return bias_; }

   private:
    at::Tensor weight_;  // [V, h] when untied
    at::Tensor bias_;    // [V] with output_layer_bias
  };
  class LMHead : public transformer::MegatronModule {
   public:
    LMHead(const transformer::TransformerConfig& config, bool bias);
    OutputLayer* output_layer;
  };

  transformer::TransformerConfig config_;
  T5Options options_;
  std::shared_ptr<const transformer::BackendProvider> backend_;
  LanguageModelEmbedding* embedding_;
  RelativePositionEmbedding* encoder_relative_pos_emb_ = nullptr;
  RelativePositionEmbedding* decoder_relative_pos_emb_ = nullptr;
  transformer::TransformerBlock* encoder_;
  transformer::TransformerBlock* decoder_;
  LMHead* lm_head_;
};

}  // namespace megatron::models
