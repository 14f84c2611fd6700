// CLIPViTModel (Megatron's models/vision/clip_vit_model.py): a ViT image encoder for CLIP and SigLIP.
//
//   images [b, 3, H, W] -> conv1 (kernel = stride = patch_dim) -> patches [b, (H/p)(W/p), h]
//     -> prepend class_token (CLIP) -> + position_embeddings -> ln_pre (CLIP)
//     -> TransformerBlock (sequence-first inside, no mask, no final norm) -> ln_post (SigLIP) -> [b, seq, h]
//
// The API is batch-first like Megatron's (its wrapper transposes around the sequence-first block).
// Parameter names are Megatron's, so checkpoints carry over:
//   conv1.weight [h, 3, p, p] (+ conv1.bias [h] for SigLIP), class_token [1, cls_len, h] (CLIP),
//   position_embeddings.weight [seq, h], ln_pre.{weight,bias} (CLIP) | ln_post.{weight,bias} (SigLIP),
//   decoder.layers.N.{input_layernorm, self_attention.linear_qkv, self_attention.linear_proj,
//                     pre_mlp_layernorm, mlp.linear_fc1, mlp.linear_fc2}.{weight,bias}
// The output of CLIP equals HuggingFace's CLIPVisionModel last_hidden_state (its post_layernorm only feeds the
// pooled output); SigLIP's equals SiglipVisionModel's last_hidden_state (post_layernorm included).
//
// Tensor parallelism (Create(config, ModelParallel{&tp_group})): the encoder stack is sharded as in GPTModel
// (transformer/model_parallel.h; heads and ffn must divide by TP); conv1, class token, position embeddings and
// ln_pre/ln_post are replicated, and every rank returns the same full output. Megatron never runs the vision
// encoder sequence-parallel (model.py turns it off for the encoder), so parallel.sequence_parallel is ignored.
//
// Initialisation follows Megatron/PyTorch defaults: class_token and position_embeddings ~ N(0, 1) (torch.randn,
// nn.Embedding), conv1 as nn.Conv2d (uniform +-1/sqrt(3 p p)), the stack as the TransformerConfig says.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/models/vision/vision_config.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_block.h"

namespace megatron::models::vision {

class CLIPViTModel : public transformer::MegatronModule {
 public:
  // Validates the config and the TP divisibility (errors name the field) and picks its backend.
  static absl::StatusOr<std::unique_ptr<CLIPViTModel>> Create(const VisionConfig& config,
                                                              const transformer::ModelParallel& parallel = {});

  // images [b, 3, img_h, img_w] (float) -> [b, seq_length, hidden].
  at::Tensor Forward(const at::Tensor& images) const;

  const VisionConfig& config() const { return config_; }

 private:
  CLIPViTModel(const VisionConfig& config, std::shared_ptr<const transformer::BackendProvider> backend,
               const transformer::ModelParallel& parallel);

  // A bare parameter holder for names like "conv1.weight" and "position_embeddings.weight".
  class Params : public transformer::MegatronModule {
   public:
    at::Tensor Add(const std::string& name, at::Tensor value) { return RegisterParameter(name, std::move(value)); }
  };

  VisionConfig config_;
  at::Tensor conv1_weight_;        // [h, 3, p, p]
  at::Tensor conv1_bias_;          // [h] (SigLIP) or undefined
  at::Tensor class_token_;         // [1, cls_len, h] or undefined
  at::Tensor position_embeddings_;  // [seq, h]
  transformer::Norm* ln_pre_ = nullptr;   // CLIP
  transformer::TransformerBlock* decoder_;
  transformer::Norm* ln_post_ = nullptr;  // SigLIP
};

}  // namespace megatron::models::vision
