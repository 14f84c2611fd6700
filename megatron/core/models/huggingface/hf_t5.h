// HuggingFace T5 (T5ForConditionalGeneration: config.json + safetensors) loaded into the core T5Model.
//
// The config read here expresses HF's T5 exactly: RMS norm (T5LayerNorm), no linear biases, relative position
// bias (computed in the first layer of each stack and shared, here encoder/decoder_relative_pos_emb), no
// attention score scaling (softmax_scale 1), ReLU or GeLU MLP (wi, wo; the gated v1.1 MLP is not supported
// yet), no output bias, and with tied embeddings the decoder output scaled by d_model^-0.5. Name map:
//   shared -> embedding.word_embeddings
//   {encoder,decoder}.block.0.layer.0.SelfAttention.relative_attention_bias -> {encoder,decoder}_relative_pos_emb.relative_attention_bias
//   {enc,dec}.block.N.layer.0.SelfAttention.{q,k,v} -> {enc,dec}.layers.N.self_attention.linear_qkv (grouped), .o -> linear_proj
//   {enc,dec}.block.N.layer.0.layer_norm -> input_layernorm
//   decoder.block.N.layer.1.EncDecAttention.q -> cross_attention.linear_q, {k,v} -> linear_kv ([ng, 2, hn]),
//     .o -> linear_proj; layer.1.layer_norm -> pre_cross_attn_layernorm
//   the MLP sublayer (encoder layer.1, decoder layer.2): DenseReluDense.{wi,wo} -> mlp.linear_fc{1,2},
//     layer_norm -> pre_mlp_layernorm
//   {encoder,decoder}.final_layer_norm -> {encoder,decoder}.final_layernorm; lm_head (untied) -> lm_head.output_layer
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/models/T5/t5_model.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::proto {
class ModelConfig;
}

namespace megatron::models::huggingface {

struct HfT5Info {
  transformer::TransformerConfig config;  // the decoder's shape; options.encoder_num_layers the encoder's depth
  T5Options options;
};

// Reads <dir>/config.json (model_type "t5"). Dropout and backend come from `recipe_model`.
absl::StatusOr<HfT5Info> ReadHfT5Config(const std::string& dir, const proto::ModelConfig& recipe_model);

// HF names/layouts -> Megatron's; `hf` may be any subset (e.g. gradients). Unknown names are an error.
absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfT5StateDict(const std::map<std::string, at::Tensor>& hf,
                                                                      const HfT5Info& info);

// Reads the checkpoint in `dir` into `model` (strict).
absl::Status LoadHfT5Weights(const std::string& dir, T5Model& model);

}  // namespace megatron::models::huggingface
