#include "megatron/core/transformer/module.h"

#include <set>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros_like.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace megatron::transformer {

at::Tensor MegatronModule::RegisterParameter(const std::string& name, at::Tensor value) {
  value.set_requires_grad(true);
  parameters_.emplace_back(name, value);
  return value;
}

void MegatronModule::CollectParameters(const std::string& prefix,
                                       std::vector<std::pair<std::string, at::Tensor>>* out) const {
  for (const auto& [name, tensor] : parameters_) out->emplace_back(prefix + name, tensor);
  for (const auto& [name, child] : children_) child->CollectParameters(prefix + name + ".", out);
}

std::vector<std::pair<std::string, at::Tensor>> MegatronModule::NamedParameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  CollectParameters("", &out);
  return out;
}

std::vector<at::Tensor> MegatronModule::Parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [name, tensor] : NamedParameters()) out.push_back(tensor);
  return out;
}

int64_t MegatronModule::NumParameters() const {
  int64_t n = 0;
  for (const auto& [name, tensor] : NamedParameters()) n += tensor.numel();
  return n;
}

std::map<std::string, at::Tensor> MegatronModule::StateDict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : NamedParameters()) out[name] = tensor.detach().clone();
  return out;
}

absl::Status MegatronModule::LoadStateDict(const std::map<std::string, at::Tensor>& state, LoadMode mode) {
  std::vector<std::string> missing, unexpected, mismatched;
  auto params = NamedParameters();
  std::set<std::string> known;
  for (const auto& [name, tensor] : params) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != tensor.sizes()) {
      mismatched.push_back(absl::StrCat(name, " (checkpoint ", c10::str(it->second.sizes()), ", model ",
                                        c10::str(tensor.sizes()), ")"));
    }
  }
  for (const auto& [name, tensor] : state) {
    if (!known.count(name)) unexpected.push_back(name);
  }
  const bool strict_failure = mode == LoadMode::kStrict && (!missing.empty() || !unexpected.empty());
  if (strict_failure || !mismatched.empty()) {
    std::string msg = "state dict does not match the model:";
    if (!missing.empty()) absl::StrAppend(&msg, "\n  missing: ", absl::StrJoin(missing, ", "));
    if (!unexpected.empty()) absl::StrAppend(&msg, "\n  unexpected: ", absl::StrJoin(unexpected, ", "));
    if (!mismatched.empty()) absl::StrAppend(&msg, "\n  shape mismatch: ", absl::StrJoin(mismatched, ", "));
    return absl::InvalidArgumentError(msg);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : params) {
    auto it = state.find(name);
    if (it != state.end()) tensor.copy_(it->second);
  }
  return absl::OkStatus();
}

void MegatronModule::SetTraining(bool training) {
  training_ = training;
  for (auto& [name, child] : children_) child->SetTraining(training);
}

void MegatronModule::ToDevice(const at::Device& device) {
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : parameters_) {
    if (tensor.device() != device) tensor.set_data(tensor.to(device));
  }
  for (auto& [name, child] : children_) child->ToDevice(device);
}

}  // namespace megatron::transformer
