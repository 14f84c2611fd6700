// The legacy GPTModel (megatron/legacy/model/gpt_model.py): TransformerLanguageModel with a causal encoder and
// no pooler, then parallel_lm_logits with the tied word embeddings (or language_model.output_layer.weight).
//
//   Logits(input_ids [b,s], position_ids [b,s] or undefined = 0..s-1, attention_mask) -> [b, s, V]
//   Loss(input_ids, position_ids, attention_mask, labels [b,s])                       -> per-token CE [b, s] fp32
// attention_mask: boolean [1 or b, 1, s, s], true = masked (get_ltor_masks_and_position_ids); undefined = the
// causal mask. Parameters: language_model.* (language_model.h), all under one prefix as legacy checkpoints
// nest them; StateDictForSaveCheckpoint gives exactly these keys.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "legacy/model/language_model.h"
#include "legacy/model/module.h"
#include "legacy/model/transformer.h"

namespace megatron::legacy {

class GPTModel : public MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<GPTModel>> Create(const transformer::TransformerConfig& config,
                                                          const LegacyOptions& options = {});

  at::Tensor Logits(const at::Tensor& input_ids, const at::Tensor& position_ids = {},
                    const at::Tensor& attention_mask = {}) const;
  at::Tensor Loss(const at::Tensor& input_ids, const at::Tensor& position_ids, const at::Tensor& attention_mask,
                  const at::Tensor& labels) const;

  const transformer::TransformerConfig& config() const { return config_; }
  const TransformerLanguageModel& language_model() const { return *language_model_; }

 private:
  GPTModel(const transformer::TransformerConfig& config, const LegacyOptions& options);
  at::Tensor LogitsSbv(const at::Tensor& input_ids, const at::Tensor& position_ids,
                       const at::Tensor& attention_mask) const;  // [s, b, V]

  transformer::TransformerConfig config_;
  TransformerLanguageModel* language_model_;
};

// Megatron's get_ltor_masks_and_position_ids mask for one sequence of length s: [1, 1, s, s], true above the
// diagonal (a key after the query is masked).
at::Tensor CausalAttentionMask(int64_t s, const at::Device& device);

}  // namespace megatron::legacy
