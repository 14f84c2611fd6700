// Core GPT models -> HuggingFace directories (config.json + model.safetensors) that transformers loads as
// GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM: the inverse of hf_loader.h.
//
//   absl::Status s = SaveHfLanguageModel(model, "qwen2", "out_dir");
//
// The Megatron grouped QKV is split back into q/k/v (GPT-2: packed [q|k|v] Conv1D, stored [in, out]), linear_fc1
// of a SwiGLU MLP into gate/up, and an untied output layer becomes lm_head.weight (tied models store none, as
// transformers does). Whether the model's shape is expressible in the chosen family is checked first, with an
// error naming the mismatch (e.g. GPT-2 needs LayerNorm, learned positions and tied embeddings).
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models::huggingface {

// model_type: "gpt2" | "llama" | "mistral" | "qwen2".
absl::StatusOr<nlohmann::json> HfLanguageModelConfig(const transformer::TransformerConfig& config,
                                                     const std::string& model_type);
// Megatron names (GPTModel::StateDict) -> HF names and layouts.
absl::StatusOr<std::map<std::string, at::Tensor>> ExportHfStateDict(const std::map<std::string, at::Tensor>& state,
                                                                   const transformer::TransformerConfig& config,
                                                                   const std::string& model_type);
absl::Status SaveHfLanguageModel(const GPTModel& model, const std::string& model_type, const std::string& dir);

}  // namespace megatron::models::huggingface
