// BertModel (Megatron's models/bert/bert_model.py): embedding (word + position + tokentype) -> bidirectional
// encoder with a padding mask -> masked-LM head and, on the pooled [CLS] state, the binary (NSP/SOP) head.
//
//   Forward(input_ids [b,s], attention_mask [b,s], tokentype_ids [b,s])          -> lm logits [b,s,V], binary [b,2]
//   Forward(input_ids, attention_mask, tokentype_ids, lm_labels [b,s])           -> lm loss [b,s] (fp32), binary [b,2]
// attention_mask uses Megatron's model-input convention: nonzero = a real token, 0 = padding. Only keys are
// masked (the [b,1,1,s] form Megatron uses with Transformer Engine >= 1.10 and HuggingFace uses): padded
// query rows still compute, and nothing reads them. The per-token loss is unreduced and unmasked except that a
// negative label (no prediction at that position) gives 0; BertPretrainingLoss reduces as pretrain_bert.py.
//
// Parameters (Megatron core names):
//   embedding.word_embeddings.weight [V, h], embedding.position_embeddings.weight [P, h],
//   embedding.tokentype_embeddings.weight [T, h], (embedding.layernorm.* with BertOptions::embedding_layernorm)
//   encoder.layers.N.*  (pre-norm: input_layernorm, pre_mlp_layernorm, encoder.final_layernorm; post-norm,
//                        config.norm_placement == kPost: post_self_attn_layernorm, post_mlp_layernorm)
//   pooler.dense.{weight,bias} [h, h] (tanh)
//   lm_head.dense.{weight,bias} [h, h] (GeLU), lm_head.layer_norm.{weight,bias} [h]
//   output_layer.bias [V]   (the weight is the tied word embedding, as Megatron's BERT requires)
//   binary_head.{weight [2, h], bias [2]}
// Megatron's BERT is pre-norm; HuggingFace's (the original) is post-norm with a LayerNorm after the embeddings:
// set config.norm_placement = kPost, config.final_layernorm = false and embedding_layernorm (hf_bert.h does).
// Single process (no tensor parallelism yet).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/models/common/language_model_embedding.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/transformer_block.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {

struct BertOptions {
  int num_tokentypes = 2;  // Megatron: 2 with the binary head, else 0
  bool add_binary_head = true;
  bool embedding_layernorm = false;
};

struct BertOutput {
  at::Tensor lm;             // logits [b, s, V] in the compute dtype, or the per-token loss [b, s] fp32
  at::Tensor binary_logits;  // [b, 2]; undefined without the binary head
};

class BertModel : public transformer::MegatronModule {
 public:
  // The config's attention mask type is set to padding; it must use learned absolute positions and tied
  // output weights. Parameters come from the current default generator.
  static absl::StatusOr<std::unique_ptr<BertModel>> Create(const transformer::TransformerConfig& config,
                                                           const BertOptions& options = {});

  // tokentype_ids must be given exactly when options.num_tokentypes > 0; attention_mask may be undefined (no
  // padding). lm_labels undefined: logits; else the per-token loss.
  BertOutput Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const at::Tensor& tokentype_ids, const at::Tensor& lm_labels = {}) const;

  const transformer::TransformerConfig& config() const { return config_; }
  const BertOptions& options() const { return options_; }

 private:
  BertModel(const transformer::TransformerConfig& config, const BertOptions& options,
            std::shared_ptr<const transformer::BackendProvider> backend);

  // pooler.dense then tanh on the first token.
  class Pooler : public transformer::MegatronModule {
   public:
    explicit Pooler(const transformer::TransformerConfig& config);
    at::Tensor Forward(const at::Tensor& hidden) const;  // [s, b, h] -> [b, h]

   private:
    transformer::Linear* dense_;
  };
  // dense -> GeLU -> layer_norm (BertLMHead); the projection to the vocabulary is the model's.
  class LMHead : public transformer::MegatronModule {
   public:
    LMHead(const transformer::TransformerConfig& config, const transformer::BackendProvider& backend);
    at::Tensor Forward(const at::Tensor& hidden) const;

   private:
    transformer::Linear* dense_;
    transformer::Norm* layer_norm_;
  };
  // Holds output_layer.bias [V] (the tied output layer's only parameter).
  class OutputBias : public transformer::MegatronModule {
   public:
    explicit OutputBias(int64_t vocab_size);
    const at::Tensor& bias() const { return bias_; }

   private:
    at::Tensor bias_;
  };

  transformer::TransformerConfig config_;
  BertOptions options_;
  std::shared_ptr<const transformer::BackendProvider> backend_;
  LanguageModelEmbedding* embedding_;
  transformer::TransformerBlock* encoder_;
  Pooler* pooler_ = nullptr;  // with the binary head
  LMHead* lm_head_;
  OutputBias* output_layer_;
  transformer::Linear* binary_head_ = nullptr;
};

// Megatron's pretrain_bert.py loss: sum(lm_loss * loss_mask) / sum(loss_mask), plus the mean cross entropy of
// binary_logits against sentence_order [b] when binary_logits is defined. A 0-d fp32 tensor.
at::Tensor BertPretrainingLoss(const at::Tensor& lm_loss, const at::Tensor& loss_mask,
                               const at::Tensor& binary_logits = {}, const at::Tensor& sentence_order = {});

}  // namespace megatron::models
