// GPTModel (Megatron's models/gpt/gpt_model.py): embedding -> transformer decoder -> output layer.
//
//   Forward(input_ids [b,s], position_ids [b,s], labels [b,s]) -> per-token cross entropy [b,s] (fp32), unreduced
//   and unmasked: the caller multiplies by loss_mask and sums (as Megatron does).
//   Forward(input_ids, position_ids)                            -> logits [b,s,V]
//
// With share_embeddings_and_output_weights the output layer reuses embedding.word_embeddings.weight and owns
// no parameter of its own; otherwise it is output_layer.weight [V, h] (no bias, as in Megatron).
// Padded vocabulary rows (ids >= the tokenizer's vocabulary) are ordinary rows; they learn to be improbable.
#pragma once

#include <memory>
#include <optional>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/models/common/language_model_embedding.h"
#include "megatron/core/models/common/rotary_pos_embedding.h"
#include "megatron/core/transformer/attention.h"
#include "megatron/core/transformer/transformer_block.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {

class GPTModel : public transformer::MegatronModule {
 public:
  // Validates the config and picks the backend it names; parameters are initialised from the current
  // default generator (seed it first for reproducible runs).
  static absl::StatusOr<std::unique_ptr<GPTModel>> Create(const transformer::TransformerConfig& config);

  // Logits [b, s, V] in the compute dtype. position_ids may be undefined: then 0..s-1 (+ cache offset).
  at::Tensor Logits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                    transformer::KVCache* cache = nullptr) const;
  // Per-token loss [b, s] in fp32.
  at::Tensor Loss(const at::Tensor& input_ids, const at::Tensor& position_ids, const at::Tensor& labels) const;

  const transformer::TransformerConfig& config() const { return config_; }

 private:
  GPTModel(const transformer::TransformerConfig& config,
           std::shared_ptr<const transformer::BackendProvider> backend);
  // Decoder output projected to the vocabulary: [s, b, V].
  at::Tensor ForwardToLogits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                             transformer::KVCache* cache) const;

  transformer::TransformerConfig config_;
  LanguageModelEmbedding* embedding_;
  std::optional<RotaryEmbedding> rotary_pos_emb_;
  transformer::TransformerBlock* decoder_;
  transformer::Linear* output_layer_ = nullptr;  // untied only
};

}  // namespace megatron::models
