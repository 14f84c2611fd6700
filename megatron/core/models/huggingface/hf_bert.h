// HuggingFace BERT (BertForPreTraining: config.json + safetensors) loaded into the core BertModel.
//
// HF BERT is the original post-norm BERT: LayerNorm after the embeddings and after each residual addition, no
// final norm. The config read here expresses exactly that (norm_placement = kPost, final_layernorm = false,
// BertOptions::embedding_layernorm). Name map (HF `bert.` prefix dropped):
//   embeddings.{word,position,token_type}_embeddings -> embedding.{word,position,tokentype}_embeddings
//   embeddings.LayerNorm                              -> embedding.layernorm
//   encoder.layer.N.attention.self.{query,key,value}  -> encoder.layers.N.self_attention.linear_qkv (grouped)
//   encoder.layer.N.attention.output.dense / LayerNorm -> self_attention.linear_proj / post_self_attn_layernorm
//   encoder.layer.N.intermediate.dense / output.dense -> mlp.linear_fc1 / mlp.linear_fc2
//   encoder.layer.N.output.LayerNorm                  -> post_mlp_layernorm
//   pooler.dense -> pooler.dense; cls.predictions.transform.{dense,LayerNorm} -> lm_head.{dense,layer_norm}
//   cls.predictions.bias -> output_layer.bias; cls.seq_relationship -> binary_head
//   cls.predictions.decoder.{weight,bias}: tied to the word embeddings / cls.predictions.bias (skipped)
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/models/bert/bert_model.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::proto {
class ModelConfig;
}

namespace megatron::models::huggingface {

struct HfBertInfo {
  transformer::TransformerConfig config;
  BertOptions options;
};

// Reads <dir>/config.json (model_type "bert"). Dropout and backend come from `recipe_model`; shapes from the
// HF config. Errors name config.json and the field.
absl::StatusOr<HfBertInfo> ReadHfBertConfig(const std::string& dir, const proto::ModelConfig& recipe_model);

// HF names/layouts -> Megatron's; `hf` may be any subset (e.g. gradients). Unknown names are an error.
absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfBertStateDict(
    const std::map<std::string, at::Tensor>& hf, const transformer::TransformerConfig& config);

// Reads the checkpoint in `dir` into `model` (strict).
absl::Status LoadHfBertWeights(const std::string& dir, BertModel& model);

}  // namespace megatron::models::huggingface
