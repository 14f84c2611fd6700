#include "megatron/core/models/huggingface/hf_common.h"

#include <set>
#include <type_traits>

#include <ATen/ops/cat.h>

#include "absl/strings/str_cat.h"
#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::models::huggingface {

absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path) {
  absl::StatusOr<std::string> text = utils::ReadFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  return j;
}

template <typename T>
absl::Status GetJsonField(const nlohmann::json& j, const std::string& path, const char* field, T* out,
                          std::optional<T> fallback) {
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
    if constexpr (std::is_integral_v<T>) {
      if (!it->is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", field, "\" must be an integer"));
      }
    }
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

template absl::Status GetJsonField<int>(const nlohmann::json&, const std::string&, const char*, int*,
                                        std::optional<int>);
template absl::Status GetJsonField<double>(const nlohmann::json&, const std::string&, const char*, double*,
                                           std::optional<double>);
template absl::Status GetJsonField<bool>(const nlohmann::json&, const std::string&, const char*, bool*,
                                         std::optional<bool>);

absl::StatusOr<std::string> GetJsonString(const nlohmann::json& j, const std::string& path, const char* field,
                                          std::optional<std::string> fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing string field \"", field, "\""));
  }
  if (!it->is_string()) return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", field, "\" must be a string"));
  return it->get<std::string>();
}

absl::StatusOr<nlohmann::json> ReadModelConfig(const std::string& dir, const std::string& model_type) {
  const std::string path = dir + "/config.json";
  absl::StatusOr<nlohmann::json> j = ReadJsonObject(path);
  if (!j.ok()) return j.status();
  auto type = j->find("model_type");
  if (type == j->end() || !type->is_string() || type->get<std::string>() != model_type) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field \"model_type\" must be \"", model_type, "\""));
  }
  return j;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadHfTensors(const std::string& dir, Dtype dtype) {
  std::vector<std::string> files;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (utils::PathExists(index_path)) {
    absl::StatusOr<nlohmann::json> index = ReadJsonObject(index_path);
    if (!index.ok()) return index.status();
    auto map = index->find("weight_map");
    if (map == index->end() || !map->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing object field \"weight_map\""));
    }
    std::set<std::string> unique;
    for (auto& [name, file] : map->items()) {
      if (!file.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map[\"", name, "\"] must be a string"));
      }
      unique.insert(file.get<std::string>());
    }
    for (const auto& f : unique) files.push_back(dir + "/" + f);
  } else {
    files.push_back(dir + "/model.safetensors");
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& file : files) {
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = checkpointing::LoadSafetensors(file);
    if (!tensors.ok()) return tensors.status();
    for (auto& [name, tensor] : *tensors) {
      if (!out.emplace(name, dtype == Dtype::kFloat32 ? tensor.to(at::kFloat) : tensor).second) {
        return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", name, "\" is also in another shard"));
      }
    }
  }
  return out;
}

at::Tensor GroupQkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int ng) {
  std::vector<int64_t> tail(q.sizes().begin() + 1, q.sizes().end());
  auto grouped = [&](const at::Tensor& t) {
    std::vector<int64_t> shape = {ng, t.size(0) / ng};
    shape.insert(shape.end(), tail.begin(), tail.end());
    return t.reshape(shape);
  };
  std::vector<int64_t> out_shape = {q.size(0) + k.size(0) + v.size(0)};
  out_shape.insert(out_shape.end(), tail.begin(), tail.end());
  return at::cat({grouped(q), grouped(k), grouped(v)}, 1).reshape(out_shape);
}

QkvParts UngroupQkv(const at::Tensor& qkv, int np, int ng) {
  const int64_t hpg = np / ng;
  const int64_t hn = qkv.size(0) / (ng * (hpg + 2));
  TORCH_CHECK(qkv.size(0) == ng * (hpg + 2) * hn, "UngroupQkv: ", qkv.size(0), " rows do not split into ", ng,
              " groups of ", hpg, " query heads + k + v");
  std::vector<int64_t> tail(qkv.sizes().begin() + 1, qkv.sizes().end());
  std::vector<int64_t> shape = {ng, hpg + 2, hn};
  shape.insert(shape.end(), tail.begin(), tail.end());
  const at::Tensor g = qkv.reshape(shape);
  auto flat = [&](const at::Tensor& t) {
    std::vector<int64_t> s = {-1};
    s.insert(s.end(), tail.begin(), tail.end());
    return t.reshape(s).contiguous();
  };
  return {flat(g.slice(1, 0, hpg)), flat(g.slice(1, hpg, hpg + 1)), flat(g.slice(1, hpg + 1, hpg + 2))};
}

absl::Status WriteHfDirectory(const std::string& dir, const nlohmann::json& config,
                              const std::map<std::string, at::Tensor>& tensors) {
  if (absl::Status s = utils::MakeDirectories(dir); !s.ok()) return s;
  if (absl::Status s = utils::WriteFileAtomically(dir + "/config.json", config.dump(2) + "\n"); !s.ok()) return s;
  return checkpointing::SaveSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace megatron::models::huggingface
