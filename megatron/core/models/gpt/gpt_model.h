// GPTModel (Megatron's models/gpt/gpt_model.py): embedding -> transformer decoder -> output layer.
//
//   Forward(input_ids [b,s], position_ids [b,s], labels [b,s]) -> per-token cross entropy [b,s] (fp32), unreduced
//   and unmasked: the caller multiplies by loss_mask and sums (as Megatron does).
//   Forward(input_ids, position_ids)                            -> logits [b,s,V]
//
// With share_embeddings_and_output_weights the output layer reuses embedding.word_embeddings.weight and owns
// no parameter of its own; otherwise it is output_layer.weight [V, h] (no bias, as in Megatron).
//
// Tensor parallelism: Create(config, ModelParallel{&tp_group, sequence_parallel}) builds the sharded model
// (see transformer/model_parallel.h); config.vocab_size must divide by the TP size. The output layer's weight
// (tied or its own) is this rank's vocab shard, the logits stay vocab-parallel and Loss uses the backend's
// VocabParallelCrossEntropy (LOCAL: tensor_parallel::VocabParallelCrossEntropy, computed in the logits' dtype when
// fp32/fp64, fp32 for half types, while the TP=1 LOCAL Loss always computes in fp32; FUSED:
// tensor_parallel::FusedVocabParallelCrossEntropy, the fused kernels' shard pass, equal to FUSED's TP=1 loss); Logits gathers the vocab shards. Every rank must call Loss/Logits with the
// same inputs. Without a group (or a group of size 1) the model is the single-process one, bit for bit.
// Padded vocabulary rows (ids >= the tokenizer's vocabulary) are ordinary rows; they learn to be improbable.
//
// Pipeline parallelism: Create(config, parallel, PipelineStage{...}) builds one model chunk (Megatron's
// pre_process / post_process and layer offset): the embedding only with pre_process, the global layers
// [layer_begin, layer_end) under their global names (decoder.layers.<i>), the final layernorm and output layer
// only with post_process; StageForward runs it. Every chunk of a pipeline starts from the single-process
// weights (Note [Pipeline initialisation] in transformer_block.h: the parts a chunk does not keep are drawn and
// dropped). Tied embeddings: a last chunk without the embedding holds a copy, output_layer.weight, created as
// zeros (Megatron's shared_embedding); the trainer makes it equal to the first stage's word embeddings with a
// sum over the embedding group, and sums the two gradients over that group after every backward
// (SharedEmbeddingWeight names the tensor on both ends).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/models/common/language_model_embedding.h"
#include "megatron/core/models/common/rotary_pos_embedding.h"
#include "megatron/core/tensor_parallel/layers.h"
#include "megatron/core/transformer/attention.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/transformer_block.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {

// The part of the model one pipeline chunk holds. Default: the whole model.
struct PipelineStage {
  bool pre_process = true;   // embedding
  bool post_process = true;  // final layernorm, output layer, loss
  int layer_begin = 0;
  int layer_end = -1;        // -1: config.num_layers

  bool whole(int num_layers) const {
    return pre_process && post_process && layer_begin == 0 && (layer_end < 0 || layer_end == num_layers);
  }
};

class GPTModel : public transformer::MegatronModule {
 public:
  // Validates the config and picks the backend it names; parameters are initialised from the current
  // default generator (seed it first for reproducible runs).
  // `parallel`: the tensor-parallel group to shard over (default: none). Its divisibility errors name the field.
  // `stage`: the pipeline chunk to build (default: the whole model); InvalidArgument for a layer range outside
  // [0, num_layers).
  static absl::StatusOr<std::unique_ptr<GPTModel>> Create(const transformer::TransformerConfig& config,
                                                          const transformer::ModelParallel& parallel = {},
                                                          const PipelineStage& stage = {});

  // Logits [b, s, V] in the compute dtype. position_ids may be undefined: then 0..s-1 (+ cache offset).
  at::Tensor Logits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                    transformer::KVCache* cache = nullptr) const;
  // Per-token loss [b, s] in fp32.
  at::Tensor Loss(const at::Tensor& input_ids, const at::Tensor& position_ids, const at::Tensor& labels) const;

  // The decoder_input path (Megatron's GPTModel.forward(decoder_input=...)) for models that build the input
  // sequence themselves (LLaVA splices image embeddings between text embeddings); whole model, no TP yet:
  //   EmbedTokens: input_ids, position_ids [b, s] -> [s, b, h] (word + learned positions, embedding dropout).
  //   LogitsFromEmbeddings / LossFromEmbeddings: decoder_input [s, b, h] -> [b, s, V] / [b, s] fp32; RoPE
  //   positions are 0..s-1 (+ the cache offset) over the given sequence.
  at::Tensor EmbedTokens(const at::Tensor& input_ids, const at::Tensor& position_ids) const;
  at::Tensor LogitsFromEmbeddings(const at::Tensor& decoder_input, transformer::KVCache* cache = nullptr) const;
  at::Tensor LossFromEmbeddings(const at::Tensor& decoder_input, const at::Tensor& labels) const;

  // One pipeline chunk's forward. With pre_process `input` is input_ids [b, s] (position_ids as for Loss);
  // otherwise the hidden states [s, b, h] ([s/tp, b, h] under sequence parallelism) from the previous chunk.
  // With post_process returns the per-token loss [b, s] in fp32 (labels [b, s] required); otherwise the hidden
  // states to send to the next chunk. Logits and Loss need the whole model.
  at::Tensor StageForward(const at::Tensor& input, const at::Tensor& position_ids, const at::Tensor& labels) const;

  const transformer::TransformerConfig& config() const { return config_; }
  const PipelineStage& stage() const { return stage_; }
  // With tied embeddings and the embedding and output layer on different chunks: the first chunk's
  // embedding.word_embeddings.weight or the last chunk's output_layer.weight copy. Undefined otherwise.
  at::Tensor SharedEmbeddingWeight() const;
  const transformer::ModelParallel& parallel() const { return parallel_; }

  // Under sequence parallelism: the replicated parameters that see only this rank's tokens (norm weights and
  // biases, RowParallelLinear biases), whose gradients the training step must all-reduce across TP (Megatron's
  // finalize_model_grads). Empty otherwise.
  std::vector<std::pair<std::string, at::Tensor>> SequenceParallelParameters() const;

 private:
  GPTModel(const transformer::TransformerConfig& config,
           std::shared_ptr<const transformer::BackendProvider> backend, const transformer::ModelParallel& parallel,
           const PipelineStage& stage);
  // Decoder output projected to the vocabulary: [s, b, V] ([s, b, V/tp] under tensor parallelism).
  at::Tensor ForwardToLogits(const at::Tensor& input_ids, const at::Tensor& position_ids,
                             transformer::KVCache* cache) const;
  // Embedding output [s, b, h] for input_ids [b, s] (positions default to offset..offset+s-1).
  at::Tensor Embed(const at::Tensor& input_ids, const at::Tensor& position_ids, int64_t offset) const;
  // Decoder and output layer from embeddings h [s, b, h] (whole model): logits [s, b, V(/tp)].
  at::Tensor HiddenToLogits(at::Tensor h, transformer::KVCache* cache) const;
  // Final hidden states -> logits [s, b, V] ([s, b, V/tp] vocab-parallel under TP).
  at::Tensor Project(const at::Tensor& h) const;
  // Vocab-parallel or full logits [s, b, V(/tp)] and labels [b, s] -> per-token loss [b, s].
  at::Tensor LossFromLogits(const at::Tensor& logits, const at::Tensor& labels) const;
  const at::Tensor& OutputWeight() const;
  // Context parallelism: this rank's zigzag global positions [s_local], and RoPE frequencies for the tokens
  // this rank holds (the plain [s, 1, 1, hn] table without CP).
  at::Tensor ContextParallelPositions(int64_t s_local, const at::Device& device) const;
  at::Tensor RotaryFreqs(int64_t s_local, int64_t offset, const at::Device& device) const;

  // The last chunk's copy of the tied word embeddings (Megatron's output_layer with shared_embedding).
  class TiedOutputWeight : public transformer::MegatronModule {
   public:
    TiedOutputWeight(int64_t rows, int64_t hidden);
    const at::Tensor& weight() const { return weight_; }

   private:
    at::Tensor weight_;  // [V(/tp), h], zeros until synchronised
  };

  transformer::TransformerConfig config_;
  std::shared_ptr<const transformer::BackendProvider> backend_;  // also computes the loss (fused CE)
  PipelineStage stage_;
  LanguageModelEmbedding* embedding_ = nullptr;  // pre_process only
  std::optional<RotaryEmbedding> rotary_pos_emb_;
  transformer::TransformerBlock* decoder_;
  transformer::ModelParallel parallel_;
  TiedOutputWeight* tied_output_ = nullptr;                               // tied, last chunk without embedding
  transformer::Linear* output_layer_ = nullptr;                           // untied, without TP
  tensor_parallel::ColumnParallelLinear* output_layer_tp_ = nullptr;      // untied, with TP
};

}  // namespace megatron::models
