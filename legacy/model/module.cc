#include "legacy/model/module.h"

#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"

namespace megatron::legacy {

std::string UpgradeLegacyKey(const std::string& key) {
  // Order matters: the block rename first, then the sub-module renames inside it.
  std::string k = absl::StrReplaceAll(key, {{"language_model.transformer.", "language_model.encoder."}});
  k = absl::StrReplaceAll(k, {{".attention.", ".self_attention."},
                              {".input_layernorm.", ".input_norm."},
                              {".post_attention_layernorm.", ".post_attention_norm."},
                              {".post_inter_attention_layernorm.", ".post_inter_attention_norm."},
                              {".final_layernorm.", ".final_norm."}});
  if (k.rfind("lm_head.layernorm.", 0) == 0) k = "lm_head.norm." + k.substr(sizeof("lm_head.layernorm.") - 1);
  return k;
}

absl::Status MegatronModule::LoadLegacyStateDict(const std::map<std::string, at::Tensor>& state,
                                                 transformer::LoadMode mode) {
  std::map<std::string, at::Tensor> upgraded;
  for (const auto& [key, tensor] : state) upgraded[UpgradeLegacyKey(key)] = tensor;
  return LoadStateDict(upgraded, mode);
}

}  // namespace megatron::legacy
