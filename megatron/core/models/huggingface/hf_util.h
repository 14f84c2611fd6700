// Pieces every HuggingFace adapter needs: config.json fields with errors that name the file and field, the
// checkpoint's tensors (single file or sharded with an index), and the q/k/v regrouping into Megatron's layout.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <type_traits>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace megatron::models::huggingface {

// Parses `path` as a JSON object.
absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path);

// Reads a required (or, with `fallback`, optional) numeric or boolean field.
template <typename T>
absl::Status GetJsonField(const nlohmann::json& j, const std::string& path, const char* field, T* out,
                          std::optional<T> fallback = std::nullopt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback) {
      *out = *fallback;
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing field \"", field, "\""));
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", field, "\" must be a boolean"));
    }
  } else {
    if (!it->is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", field, "\" must be a number"));
    }
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

// Every tensor of <dir>/model.safetensors (or of the shards model.safetensors.index.json names), as fp32.
absl::StatusOr<std::map<std::string, at::Tensor>> ReadHfTensors(const std::string& dir);

// HF's q rows (all query heads), k rows, v rows -> Megatron's grouped [ng, (np/ng + 2), hn] order (Note [QKV
// layout] in transformer/attention.h). Works on weights [rows, in] and biases [rows].
at::Tensor GroupQkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int ng);

}  // namespace megatron::models::huggingface
