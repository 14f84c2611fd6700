// MultimodalProjector (Megatron's models/vision/multimodal_projector.py): maps vision-encoder embeddings into the
// language model's hidden space.
//
//   "mlp":    [norm ->] linear_fc1 (input_size -> ffn) -> activation -> linear_fc2 (ffn -> hidden)
//   "affine": one linear layer input_size -> hidden
//
// Parameter names are Megatron's (prefixed "vision_projection." inside LLaVA):
//   mlp:    encoder.linear_fc1.{weight [ffn, in], bias [ffn]}, encoder.linear_fc2.{weight [hidden, ffn], bias}
//           with a norm: encoder.linear_fc1.{layer_norm_weight, layer_norm_bias} [in] (Transformer Engine's
//           LayerNormColumnParallelLinear, the spec Megatron uses when the projection config sets normalization)
//   affine: encoder.{weight [hidden, in], bias [hidden]}
// Biases exist when add_bias_linear (config.py turns them off except for the Llama-3.1 projection).
//
// Tensor parallelism (Create(config, ModelParallel{&tp_group})), as Megatron: mlp's linear_fc1 is column-parallel
// (the norm replicated in front of it) and linear_fc2 row-parallel; affine is column-parallel with its output
// gathered. ffn_hidden_size (mlp) or hidden_size (affine) must divide by TP. Inputs and outputs are replicated
// on every rank. At TP=1 the layers are exactly the plain ones (tensor_parallel/layers.h).
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/tensor_parallel/layers.h"
#include "megatron/core/transformer/layers.h"
#include "megatron/core/transformer/model_parallel.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models::vision {

enum class ProjectorType { kMlp, kAffine };

struct ProjectorConfig {
  ProjectorType projector_type = ProjectorType::kMlp;
  int input_size = 1024;       // the encoder's hidden size (x4 after pixel shuffle)
  int ffn_hidden_size = 4096;  // mlp only
  int hidden_size = 4096;      // the language model's hidden size
  transformer::Activation activation = transformer::Activation::kGelu;  // mlp only; no gated units
  bool add_bias_linear = false;
  bool layernorm = false;  // mlp only: LayerNorm over the input before linear_fc1
  double layernorm_epsilon = 1e-5;
  double init_method_std = 0.02;

  // InvalidArgument naming the field ("projector.ffn_hidden_size: ...").
  absl::Status Validate() const;
};

// Shape arithmetic, equal to MultimodalProjector::NumParameters().
int64_t ProjectorParameterCount(const ProjectorConfig& config);

class MultimodalProjector : public transformer::MegatronModule {
 public:
  static absl::StatusOr<std::unique_ptr<MultimodalProjector>> Create(const ProjectorConfig& config,
                                                                     const transformer::ModelParallel& parallel = {});

  // x [..., input_size] -> [..., hidden_size]
  at::Tensor Forward(const at::Tensor& x) const;

  const ProjectorConfig& config() const { return config_; }

 private:
  MultimodalProjector(const ProjectorConfig& config, distributed::Group* tp);

  // linear_fc1 with Transformer Engine's fused input LayerNorm (parameter names as TE's LayerNormColumnParallel-
  // Linear: weight, bias, layer_norm_weight, layer_norm_bias).
  class LayerNormColumnParallelLinear : public tensor_parallel::ColumnParallelLinear {
   public:
    LayerNormColumnParallelLinear(const ProjectorConfig& config, distributed::Group* tp);
    at::Tensor Forward(const at::Tensor& x) const;

   private:
    double eps_;
    at::Tensor layer_norm_weight_;  // [in] or undefined
    at::Tensor layer_norm_bias_;    // [in] or undefined
  };
  class Mlp : public transformer::MegatronModule {
   public:
    Mlp(const ProjectorConfig& config, distributed::Group* tp);
    LayerNormColumnParallelLinear* linear_fc1;      // weight [ffn/tp, in]
    tensor_parallel::RowParallelLinear* linear_fc2;  // weight [hidden, ffn/tp]
  };

  ProjectorConfig config_;
  transformer::TransformerConfig activation_config_;  // what the backend's Activation reads
  Mlp* mlp_ = nullptr;                                       // "mlp"
  tensor_parallel::ColumnParallelLinear* affine_ = nullptr;  // "affine": weight [hidden/tp, in], output gathered
};

}  // namespace megatron::models::vision
