// The legacy MegatronModule (megatron/legacy/model/module.py): the base of the legacy models.
//
// Legacy checkpoints store model['language_model'] as a nested dict ({embedding: {...}, encoder: {...}, ...});
// flattened with dots, that is exactly our dotted parameter names, so StateDictForSaveCheckpoint is the flat
// form of state_dict_for_save_checkpoint ("language_model.encoder.layers.0.self_attention.query_key_value.weight").
// Loading accepts the older names Megatron's load_state_dict upgrades (see UpgradeLegacyKey).
// Single process: no pipeline stages, so no word_embeddings_for_head copy (Megatron writes it only when PP > 1).
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "megatron/core/transformer/module.h"

namespace megatron::legacy {

// Megatron's backward-compatible renames on load: language_model.transformer. -> language_model.encoder.,
// .attention. -> .self_attention., input_layernorm -> input_norm, post_attention_layernorm -> post_attention_norm,
// post_inter_attention_layernorm -> post_inter_attention_norm, final_layernorm -> final_norm,
// lm_head.layernorm -> lm_head.norm. Current names come back unchanged.
std::string UpgradeLegacyKey(const std::string& key);

class MegatronModule : public transformer::MegatronModule {
 public:
  std::map<std::string, at::Tensor> StateDictForSaveCheckpoint() const { return StateDict(); }
  // Upgrades old key names (UpgradeLegacyKey), then loads as MegatronModule::LoadStateDict.
  absl::Status LoadLegacyStateDict(const std::map<std::string, at::Tensor>& state, transformer::LoadMode mode);
};

}  // namespace megatron::legacy
