// HuggingFace checkpoints (config.json + *.safetensors) loaded into the core GPT model.
//
// Supported `model_type`s: "gpt2" (LayerNorm, gelu_new, learned positions, tied output) and the Llama family
// "llama", "mistral", "qwen2" (RMSNorm, SwiGLU, RoPE, GQA; Qwen2's q/k/v biases). Names map onto Megatron core
// names; the Megatron QKV layout is built from HF's separate or packed projections (see Note [QKV layout] in
// transformer/attention.h), GPT-2's Conv1D weights are transposed, and Llama's gate/up become linear_fc1.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::proto {
class ModelConfig;
}

namespace megatron::models::huggingface {

enum class HfFamily { kGpt2, kLlama };

struct HfModelInfo {
  HfFamily family;
  std::string model_type;
  transformer::TransformerConfig config;
};

// Reads <dir>/config.json. Dropout and backend come from `recipe_model` (HF configs describe inference);
// every shape field comes from the HF config. Errors name config.json and the field.
absl::StatusOr<HfModelInfo> ReadHfModelInfo(const std::string& dir, const proto::ModelConfig& recipe_model);
absl::StatusOr<transformer::TransformerConfig> ReadHfConfig(const std::string& dir,
                                                            const proto::ModelConfig& recipe_model);

// Maps HF tensor names/layouts to Megatron core names/layouts. `hf` may hold any subset of tensors of the same
// names (e.g. gradients); unknown names are an error that lists them.
absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfStateDict(const std::map<std::string, at::Tensor>& hf,
                                                                    const HfModelInfo& info);

// Reads <dir>/model.safetensors (or the shards named by model.safetensors.index.json) into `model` (strict).
absl::Status LoadHfWeights(const std::string& dir, GPTModel& model);

}  // namespace megatron::models::huggingface
