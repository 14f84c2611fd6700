// The legacy T5Model (megatron/legacy/model/t5_model.py), single process: TransformerLanguageModel with a
// padding-masked encoder and a causal decoder with cross attention (inter_attention), learned absolute
// positions from the one shared embedding, and T5LMHead (tied logits + bias).
//
//   Logits(encoder_ids [b,se], decoder_ids [b,sd], encoder_mask [b,se] (1 = token))  -> [b, sd, V]
//   Loss(encoder_ids, decoder_ids, encoder_mask, labels [b,sd])                      -> per-token CE [b, sd] fp32
// Masks as Megatron's T5 dataset builds them: encoder [b,1,se,se] (outer product of the padding), decoder causal,
// encoder-decoder [b,1,sd,se] (the encoder padding on keys); all true = masked.
// Parameters: language_model.embedding.*, language_model.encoder.*, language_model.decoder.layers.N.{input_norm,
// self_attention, post_attention_norm, inter_attention.{query,key_value,dense}, post_inter_attention_norm, mlp},
// language_model.decoder.final_norm.*, lm_head.bias [V].
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "legacy/model/language_model.h"
#include "legacy/model/module.h"
#include "legacy/model/transformer.h"

namespace megatron::legacy {

class T5Model : public MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<T5Model>> Create(const transformer::TransformerConfig& config,
                                                         const LegacyOptions& options = {});
  at::Tensor Logits(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                    const at::Tensor& encoder_mask) const;
  at::Tensor Loss(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids, const at::Tensor& encoder_mask,
                  const at::Tensor& labels) const;

 private:
  T5Model(const transformer::TransformerConfig& config, const LegacyOptions& options);
  at::Tensor LogitsSbv(const at::Tensor& encoder_ids, const at::Tensor& decoder_ids,
                       const at::Tensor& encoder_mask) const;  // [sd, b, V]

  class T5LMHead : public transformer::MegatronModule {
   public:
    explicit T5LMHead(int64_t vocab_size);
    const at::Tensor& bias() const { return bias_; }

   private:
    at::Tensor bias_;  // [V]
  };

  transformer::TransformerConfig config_;
  TransformerLanguageModel* language_model_;
  T5LMHead* lm_head_;
};

}  // namespace megatron::legacy
