// Legacy <-> core checkpoint conversion (Megatron's tools/checkpoint loader/saver mapping, research notes §5.7),
// and loading a checkpoint into a model with one clear message when the checkpoint is of another kind.
//
// Key mapping (GPT: core block `decoder`; BERT: core block `encoder`; N = layer index):
//   language_model.embedding.{word,position,tokentype}_embeddings.weight <-> embedding.<same>.weight
//   language_model.encoder.layers.N.input_norm.*                <-> <block>.layers.N.input_layernorm.*
//   ...layers.N.self_attention.query_key_value.*                <-> ...self_attention.linear_qkv.*
//   ...layers.N.self_attention.dense.*                          <-> ...self_attention.linear_proj.*
//   ...layers.N.post_attention_norm.*                           <-> ...pre_mlp_layernorm.*
//   ...layers.N.mlp.dense_h_to_4h.* / dense_4h_to_h.*           <-> ...mlp.linear_fc1.* / linear_fc2.*
//   language_model.encoder.final_norm.*                         <-> <block>.final_layernorm.*
//   language_model.output_layer.weight                          <-> output_layer.weight (untied GPT)
//   BERT: language_model.pooler.dense.* <-> pooler.dense.*, lm_head.dense.* <-> lm_head.dense.*,
//         lm_head.norm.* <-> lm_head.layer_norm.*, lm_head.bias <-> output_layer.bias, binary_head.* (same)
//   T5 (core blocks encoder and decoder): the encoder as BERT's; decoder layers map post_attention_norm <->
//         pre_cross_attn_layernorm, inter_attention.{query,key_value,dense} <-> cross_attention.{linear_q,
//         linear_kv,linear_proj}, post_inter_attention_norm <-> pre_mlp_layernorm;
//         language_model.decoder.final_norm <-> decoder.final_layernorm; lm_head.bias <-> lm_head.output_layer.bias
//         (learned absolute positions only: the legacy T5 has no relative position bias)
// Tensors are copied unchanged: the fused QKV uses the same grouped layout in both trees (checkpoint version
// >= 2.0; see Note [Legacy QKV layout] in legacy/model/transformer.h) and both trees keep SwiGLU's [gate; up].
// Older legacy key names (input_layernorm, .attention., transformer.) are upgraded first, so they convert too.
// A key that fits neither side is an error naming it; nothing is written then.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/transformer/module.h"

namespace megatron::legacy {

enum class ModelFamily { kGpt, kBert, kT5 };
enum class Tree { kLegacy, kCore };
enum class Direction { kLegacyToCore, kCoreToLegacy };

const char* FamilyName(ModelFamily family);  // "gpt", "bert", "t5"
const char* TreeName(Tree tree);              // "legacy", "core"

using StateDict = std::map<std::string, at::Tensor>;

absl::StatusOr<StateDict> LegacyToCore(const StateDict& legacy, ModelFamily family);
absl::StatusOr<StateDict> CoreToLegacy(const StateDict& core, ModelFamily family);

// The tree and family a state dict was written by, from its keys (legacy: language_model.*; BERT: lm_head.* or
// an encoder block; GPT: a decoder block or no LM head). NotFound when no key fits.
struct CheckpointKind {
  Tree tree;
  ModelFamily family;
};
absl::StatusOr<CheckpointKind> DetectCheckpointKind(const StateDict& state);

// The command that converts `input` into a checkpoint for (tree, family).
std::string ConversionCommand(ModelFamily family, Direction direction, const std::string& input);

// Loads the latest checkpoint of `input_dir` (our atomic format, megatron/core/checkpointing), converts its model
// tensors, and writes them as the same iteration under `output_dir` (atomically; optimizer state is not carried,
// its keys name the other tree's parameters). The input must be of `family` and of the direction's source tree;
// any error comes before anything is written.
absl::Status ConvertCheckpoint(const std::string& input_dir, const std::string& output_dir, ModelFamily family,
                               Direction direction);

// Loads the latest checkpoint of `dir` into `model`, a (tree, family) model. A checkpoint of the other tree or
// family, or with other shapes, fails with one message that names the first mismatching tensor and, for another
// tree, the conversion command; the model is left untouched then.
absl::Status LoadModelCheckpoint(const std::string& dir, Tree tree, ModelFamily family,
                                 transformer::MegatronModule* model);

}  // namespace megatron::legacy
