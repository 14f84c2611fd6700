#include "megatron/core/models/vision/multimodal_projector.h"


#include <ATen/TensorOperators.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"

namespace megatron::models::vision {
namespace {

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("projector.", field, ": ", what));
}

}  // namespace

absl::Status ProjectorConfig::Validate() const {
  if (input_size <= 0) return FieldError("input_size", absl::StrCat("must be positive, got ", input_size));
  if (hidden_size <= 0) return FieldError("hidden_size", absl::StrCat("must be positive, got ", hidden_size));
  if (projector_type == ProjectorType::kMlp) {
    if (ffn_hidden_size <= 0) {
      return FieldError("ffn_hidden_size", absl::StrCat("must be positive, got ", ffn_hidden_size));
    }
    if (activation == transformer::Activation::kSwiGLU) {
      return FieldError("activation", "the projector has no gated linear unit (Megatron sets it off)");
    }
    if (layernorm && layernorm_epsilon <= 0) {
      return FieldError("layernorm_epsilon", absl::StrCat("must be positive, got ", layernorm_epsilon));
    }
  } else if (layernorm) {
    return FieldError("layernorm", "only the \"mlp\" projector has a norm");
  }
  if (init_method_std <= 0) {
    return FieldError("init_method_std", absl::StrCat("must be positive, got ", init_method_std));
  }
  return absl::OkStatus();
}

int64_t ProjectorParameterCount(const ProjectorConfig& c) {
  const int64_t in = c.input_size, ffn = c.ffn_hidden_size, h = c.hidden_size;
  const bool bias = c.add_bias_linear;
  if (c.projector_type == ProjectorType::kAffine) return in * h + (bias ? h : 0);
  return (c.layernorm ? 2 * in : 0) + in * ffn + (bias ? ffn : 0) + ffn * h + (bias ? h : 0);
}

MultimodalProjector::LayerNormColumnParallelLinear::LayerNormColumnParallelLinear(const ProjectorConfig& c,
                                                                                 distributed::Group* tp)
    : ColumnParallelLinear(c.input_size, c.ffn_hidden_size, c.add_bias_linear, tensor_parallel::GatherOutput::kNo,
                           transformer::InitMethod{c.init_method_std}, tp),
      eps_(c.layernorm_epsilon) {
  if (c.layernorm) {
    layer_norm_weight_ = RegisterParameter("layer_norm_weight", at::ones({c.input_size}));
    layer_norm_bias_ = RegisterParameter("layer_norm_bias", at::zeros({c.input_size}));
  }
}

at::Tensor MultimodalProjector::LayerNormColumnParallelLinear::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == weight().size(1), "MultimodalProjector: input has ", x.size(-1),
              " features, projector.input_size is ", weight().size(1), " (input shape ", x.sizes(), ")");
  if (!layer_norm_weight_.defined()) return ColumnParallelLinear::Forward(x);
  return ColumnParallelLinear::Forward(at::layer_norm(x, {x.size(-1)}, layer_norm_weight_, layer_norm_bias_, eps_));
}

MultimodalProjector::Mlp::Mlp(const ProjectorConfig& c, distributed::Group* tp) {
  linear_fc1 = RegisterModule("linear_fc1", std::make_unique<LayerNormColumnParallelLinear>(c, tp));
  linear_fc2 = RegisterModule("linear_fc2", std::make_unique<tensor_parallel::RowParallelLinear>(
                                                c.ffn_hidden_size, c.hidden_size, c.add_bias_linear,
                                                tensor_parallel::InputIsParallel::kYes,
                                                transformer::InitMethod{c.init_method_std}, tp));
}

absl::StatusOr<std::unique_ptr<MultimodalProjector>> MultimodalProjector::Create(
    const ProjectorConfig& config, const transformer::ModelParallel& parallel) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const int tp = parallel.tp_size();
  const bool mlp = config.projector_type == ProjectorType::kMlp;
  const int sharded = mlp ? config.ffn_hidden_size : config.hidden_size;
  if (sharded % tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat(mlp ? "projector.ffn_hidden_size=" : "projector.hidden_size=",
                                                   sharded, " is not divisible by the tensor-parallel size ", tp));
  }
  return std::unique_ptr<MultimodalProjector>(new MultimodalProjector(config, parallel.tp));
}

MultimodalProjector::MultimodalProjector(const ProjectorConfig& config, distributed::Group* tp) : config_(config) {
  activation_config_.activation = config.activation;
  if (config.projector_type == ProjectorType::kMlp) {
    mlp_ = RegisterModule("encoder", std::make_unique<Mlp>(config, tp));
  } else {
    affine_ = RegisterModule("encoder", std::make_unique<tensor_parallel::ColumnParallelLinear>(
                                            config.input_size, config.hidden_size, config.add_bias_linear,
                                            tensor_parallel::GatherOutput::kYes,
                                            transformer::InitMethod{config.init_method_std}, tp));
  }
}

at::Tensor MultimodalProjector::Forward(const at::Tensor& x) const {
  if (affine_ != nullptr) return affine_->Forward(x);
  // The activation is a pure function of the config; the local backend's is the reference one.
  const at::Tensor hidden = transformer::LocalBackend()->Activation(activation_config_, mlp_->linear_fc1->Forward(x));
  return mlp_->linear_fc2->Forward(hidden);
}

}  // namespace megatron::models::vision
