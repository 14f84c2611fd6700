// LLaVAModel (Megatron's models/multimodal/llava_model.py): vision encoder -> projector -> language model.
//
//   images [tiles, 3, H, W] -> vision_model (CLIP/SigLIP ViT) -> [tiles, seq_v, h_v]
//     -> drop the class token(s) (drop_vision_class_token) -> pixel shuffle (optional: seq/4, 4 h_v)
//     -> [img_seq, tiles, h_v] -> vision_projection -> [img_seq, tiles, h]
//   input_ids [b, t] (one <image> token per image) -> language_model.embedding (image tokens read id 0)
//   -> splice (splice.h: each <image> becomes tiles x img_seq embeddings; labels and loss mask follow)
//   -> language_model decoder + output layer on the combined sequence (RoPE positions 0..S-1 over it).
//
// Module names are Megatron's: language_model.*, vision_model.*, vision_projection.*, so a LLaVA checkpoint
// combined from a language-model and a vision checkpoint (tools:combine_checkpoints) loads directly.
// Freeze(...) turns requires_grad off for whole submodules (nothing else changes, as in Megatron).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/parallel_state/context_parallel.h"
#include "megatron/core/models/multimodal/splice.h"
#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/models/vision/multimodal_projector.h"
#include "megatron/core/transformer/module.h"

namespace megatron::models::multimodal {

struct LlavaConfig {
  transformer::TransformerConfig language;  // vocab_size: padded, includes <image>
  vision::VisionConfig vision;
  vision::ProjectorConfig projector;        // input_size must be the vision hidden size (x4 with pixel_shuffle)
  bool drop_vision_class_token = true;      // must be false for SigLIP (it has none)
  bool pixel_shuffle = false;
  int64_t image_token_index = kDefaultImageTokenIndex;
  int language_max_sequence_length = 0;     // the combined sequence is truncated to this; 0: max_position_embeddings
  // The language model's sequence/context parallel layout. With sequence parallelism or CP > 1, a training
  // forward (labels given) pads the combined sequence at its end by the shared get_padding rule
  // (parallel_state::ContextParallelPadding, research notes §1.8: Megatron's train.py pads the batch by the same
  // rule): zero embeddings, label 0, loss mask 0, so the loss over the real positions is unchanged (causal
  // attention) and the length divides by what the layout splits it into.
  parallel_state::PaddingOptions language_padding;

  // Embeddings one tile contributes to the combined sequence (Megatron's get_num_image_embeddings).
  int64_t img_seq_len() const;
  // InvalidArgument naming the field (e.g. "projector.input_size").
  absl::Status Validate() const;
};

struct LlavaOutput {
  at::Tensor output;     // per-token loss [b, S] fp32 with labels; logits [b, S, V] without
  at::Tensor loss_mask;  // the expanded loss mask [b, S] (undefined without one)
  at::Tensor labels;     // the expanded labels [b, S] (undefined without labels)
};

class LLaVAModel : public transformer::MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<LLaVAModel>> Create(const LlavaConfig& config);

  // images [tiles, 3, H, W] (undefined or empty for a text-only batch), input_ids [b, t], labels / loss_mask
  // [b, t] (undefined for inference), num_image_tiles [num_images] int64 (undefined: one tile per image).
  // With `cache` (inference) the combined sequence's keys/values are cached; later steps call
  // language_model().Logits with plain token ids and the same cache.
  LlavaOutput Forward(const at::Tensor& images, const at::Tensor& input_ids, const at::Tensor& labels,
                      const at::Tensor& loss_mask, const at::Tensor& num_image_tiles,
                      transformer::KVCache* cache = nullptr) const;

  // Image embeddings [img_seq, tiles, h] as the language model receives them.
  at::Tensor EncodeImages(const at::Tensor& images) const;

  void Freeze(bool language_model, bool vision_model, bool vision_projection);

  const LlavaConfig& config() const { return config_; }
  const GPTModel& language_model() const { return *language_model_; }
  const vision::CLIPViTModel& vision_model() const { return *vision_model_; }

 private:
  LLaVAModel(const LlavaConfig& config, std::unique_ptr<GPTModel> lm, std::unique_ptr<vision::CLIPViTModel> vit,
             std::unique_ptr<vision::MultimodalProjector> projector);

  LlavaConfig config_;
  GPTModel* language_model_;
  vision::CLIPViTModel* vision_model_;
  vision::MultimodalProjector* vision_projection_;
};

}  // namespace megatron::models::multimodal
