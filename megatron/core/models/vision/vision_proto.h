// multimodal.proto -> the C++ configs of the vision encoder, the projector and a LLaVA model's three parts,
// with errors that name the field ("vision_model.img_h: ...", "projector.ffn_hidden_size: ...",
// "language_model.num_layers: ..."), and parameter counts by shape arithmetic (no weights allocated), used to
// check presets of billions of parameters against the published counts.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "megatron/core/models/vision/multimodal_projector.h"
#include "megatron/core/models/vision/vision_config.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::proto {
class VisionModelConfig;
class ProjectorConfig;
class LlavaModelConfig;
}  // namespace megatron::proto

namespace megatron::models::vision {

absl::Status VisionConfigFromProto(const proto::VisionModelConfig& p, VisionConfig* out);

// input_size: the encoder's output width (x4 with pixel shuffle); hidden_size: the language model's.
absl::Status ProjectorConfigFromProto(const proto::ProjectorConfig& p, int input_size, int hidden_size,
                                      ProjectorConfig* out);

// The fields (and defaults) of multimodal::LlavaConfig, which can be filled from this one for one.
struct LlavaConfigs {
  transformer::TransformerConfig language;
  VisionConfig vision;
  ProjectorConfig projector;
  bool drop_vision_class_token = true;  // must be false for SigLIP (it has none; Megatron asserts the same)
  bool pixel_shuffle = false;
  int image_token_index = -200;
  // Embeddings one image tile contributes to the language model's sequence (GetNumImageEmbeddings).
  int img_seq_len = 0;
};

// Converts and cross-checks the three parts: projector sizes from the towers, no class token to drop for SigLIP,
// pixel shuffle only on an even square grid without class tokens, image tokens fitting in the language model's max_position_embeddings.
// `tokenizer_vocab_size` as transformer::FromProto (unused when language_model.vocab_size is set).
absl::Status LlavaConfigsFromProto(const proto::LlavaModelConfig& p, int tokenizer_vocab_size, LlavaConfigs* out);

// GPTModel::NumParameters() by arithmetic: embeddings (+ learned positions) + decoder + untied output layer.
int64_t GptParameterCount(const transformer::TransformerConfig& config);

struct LlavaParameterCounts {
  int64_t language_model = 0;
  int64_t vision_model = 0;
  int64_t vision_projection = 0;
  int64_t total() const { return language_model + vision_model + vision_projection; }
};
LlavaParameterCounts CountLlavaParameters(const LlavaConfigs& configs);

}  // namespace megatron::models::vision
