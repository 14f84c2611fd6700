#include "megatron/core/models/huggingface/hf_util.h"

#include <set>
#include <vector>

#include <ATen/ops/cat.h>

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

absl::StatusOr<std::map<std::string, at::Tensor>> ReadHfTensors(const std::string& dir) {
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
      if (file.is_string()) unique.insert(file.get<std::string>());
    }
    for (const auto& f : unique) files.push_back(dir + "/" + f);
  } else {
    files.push_back(dir + "/model.safetensors");
  }
  std::map<std::string, at::Tensor> hf;
  for (const auto& file : files) {
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = checkpointing::LoadSafetensors(file);
    if (!tensors.ok()) return tensors.status();
    for (auto& [name, tensor] : *tensors) hf[name] = tensor.to(at::kFloat);
  }
  return hf;
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

}  // namespace megatron::models::huggingface
