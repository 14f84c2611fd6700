// Helpers shared by the HuggingFace adapters (vision models and exports): config.json fields with errors that
// name the file and field, checkpoint files (single or sharded), and Megatron's grouped QKV layout.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::models::huggingface {

// Parses a JSON object; errors name the path.
absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path);

// Reads a numeric (or boolean) field; without `fallback` a missing field is an error naming `path` and `field`.
template <typename T>
absl::Status GetJsonField(const nlohmann::json& j, const std::string& path, const char* field, T* out,
                          std::optional<T> fallback = std::nullopt);

// <dir>/config.json, checked to have "model_type" == `model_type` (the error names the file and the field).
absl::StatusOr<nlohmann::json> ReadModelConfig(const std::string& dir, const std::string& model_type);

// A string field ("model_type", "hidden_act"), or `fallback` when absent (error when absent without one).
absl::StatusOr<std::string> GetJsonString(const nlohmann::json& j, const std::string& path, const char* field,
                                          std::optional<std::string> fallback = std::nullopt);

// Every tensor of <dir>/model.safetensors, or of the shards listed by <dir>/model.safetensors.index.json, in its
// stored dtype, or converted to fp32 with Dtype::kFloat32 (what the loaders build models from).
enum class Dtype { kAsStored, kFloat32 };
absl::StatusOr<std::map<std::string, at::Tensor>> ReadHfTensors(const std::string& dir,
                                                                Dtype dtype = Dtype::kAsStored);

// HF order (all q heads, then k heads, then v heads) -> Megatron's [ng, hpg + 2, hn] on dim 0 (Note [QKV layout]
// in transformer/attention.h); for weights [rows, in] and biases [rows]. UngroupQkv is the inverse.
at::Tensor GroupQkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int num_query_groups);
struct QkvParts {
  at::Tensor q, k, v;
};
QkvParts UngroupQkv(const at::Tensor& qkv, int num_attention_heads, int num_query_groups);

// Writes <dir>/config.json (pretty-printed) and <dir>/model.safetensors ({"format": "pt"}, as transformers
// writes), creating dir.
absl::Status WriteHfDirectory(const std::string& dir, const nlohmann::json& config,
                              const std::map<std::string, at::Tensor>& tensors);

}  // namespace megatron::models::huggingface
