// HuggingFace vision encoders <-> the core CLIPViTModel: CLIP (CLIPVisionModel, or the vision tower of a full
// CLIPModel) and SigLIP (SiglipVisionModel / SiglipModel).
//
//   absl::StatusOr<HfVisionModel> m = LoadHfVisionModel("siglip-so400m-patch14-384");  // config.json + safetensors
//   at::Tensor features = m->model->Forward(pixels);   // == HF last_hidden_state
//   absl::Status s = SaveHfVisionModel(*m->model, "out_dir", m->extras);                // loadable by transformers
//
// config.json: model_type "clip_vision_model" / "siglip_vision_model", or "clip" / "siglip" with a
// "vision_config" object (absent fields take transformers' defaults, as transformers does). Tensors come from
// model.safetensors or the shards of model.safetensors.index.json, with or without the "vision_model." prefix
// (transformers < 5 and full models write it, transformers 5's *VisionModel does not); a full model's text tower,
// projections and logit scale/bias are ignored.
//
// Name map (HF -> Megatron):
//   embeddings.class_embedding [h]         -> class_token [1, 1, h]
//   embeddings.patch_embedding.{weight,bias} -> conv1.{weight,bias}
//   embeddings.position_embedding.weight   -> position_embeddings.weight
//   pre_layrnorm (CLIP)                    -> ln_pre;   post_layernorm (SigLIP) -> ln_post
//   encoder.layers.N.layer_norm1 / layer_norm2 -> decoder.layers.N.input_layernorm / pre_mlp_layernorm
//   encoder.layers.N.self_attn.{q,k,v}_proj -> decoder.layers.N.self_attention.linear_qkv (Megatron's grouped
//                                              layout, one group per head)
//   encoder.layers.N.self_attn.out_proj    -> decoder.layers.N.self_attention.linear_proj
//   encoder.layers.N.mlp.fc1 / fc2         -> decoder.layers.N.mlp.linear_fc1 / linear_fc2
// Tensors that only feed HF's pooler_output have no Megatron counterpart (CLIP's post_layernorm, SigLIP's
// attention-pooling head.*); they are returned as `extras` so an export can write them back unchanged.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/models/vision/vision_config.h"

namespace megatron::models::huggingface {

struct HfVisionInfo {
  std::string model_type;  // as written in config.json ("clip_vision_model", "siglip", ...)
  vision::VisionConfig config;
};

// Reads <dir>/config.json; errors name the file and field.
absl::StatusOr<HfVisionInfo> ReadHfVisionInfo(const std::string& dir);

// HF names (either prefix form) -> Megatron names/layouts for `config`. Names of the pooler-only tensors go to
// `extras` (without prefix) when it is given. Unknown names are an error listing them. Also converts
// gradients keyed by HF parameter names.
absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfVisionStateDict(
    const std::map<std::string, at::Tensor>& hf, const vision::VisionConfig& config,
    std::map<std::string, at::Tensor>* extras = nullptr);

struct HfVisionModel {
  std::unique_ptr<vision::CLIPViTModel> model;
  std::map<std::string, at::Tensor> extras;  // pooler-only HF tensors (see above)
};

// Builds the model from config.json and loads every weight (strict), as float32.
absl::StatusOr<HfVisionModel> LoadHfVisionModel(const std::string& dir);

// Loads the weights of <dir> into an existing single-process `model` (strict; shapes must match config.json's).
// `extras` receives the pooler-only tensors when given.
absl::Status LoadHfVisionWeights(const std::string& dir, vision::CLIPViTModel& model,
                                 std::map<std::string, at::Tensor>* extras = nullptr);

// Megatron -> HF names ("vision_model." prefix, which every transformers version loads). CLIP's post_layernorm
// and SigLIP's head come from `extras`; without them CLIP gets an identity post_layernorm (weight 1, bias 0) and
// SigLIP is exported with vision_use_head = false.
absl::StatusOr<std::map<std::string, at::Tensor>> ExportHfVisionStateDict(
    const vision::CLIPViTModel& model, const std::map<std::string, at::Tensor>& extras = {});

// Writes <dir>/config.json (CLIPVisionModel / SiglipVisionModel) and <dir>/model.safetensors.
// Non-square encoders cannot be expressed in HF's config (one image_size) and are an error.
absl::Status SaveHfVisionModel(const vision::CLIPViTModel& model, const std::string& dir,
                               const std::map<std::string, at::Tensor>& extras = {});

}  // namespace megatron::models::huggingface
