#include "megatron/core/models/vision/multimodal_projector.h"

#include <optional>

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"

namespace megatron::models::vision {
namespace {

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("projector.", field, ": ", what));
}

std::optional<at::Tensor> Optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
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

MultimodalProjector::LayerNormLinear::LayerNormLinear(int64_t in, int64_t out, bool bias, bool layernorm, double eps,
                                                      double init_std)
    : eps_(eps) {
  weight_ = RegisterParameter("weight", at::empty({out, in}).normal_(0.0, init_std));
  if (bias) bias_ = RegisterParameter("bias", at::zeros({out}));
  if (layernorm) {
    layer_norm_weight_ = RegisterParameter("layer_norm_weight", at::ones({in}));
    layer_norm_bias_ = RegisterParameter("layer_norm_bias", at::zeros({in}));
  }
}

at::Tensor MultimodalProjector::LayerNormLinear::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == weight_.size(1), "MultimodalProjector: input has ", x.size(-1),
              " features, projector.input_size is ", weight_.size(1), " (input shape ", x.sizes(), ")");
  const at::Tensor in =
      layer_norm_weight_.defined() ? at::layer_norm(x, {x.size(-1)}, layer_norm_weight_, layer_norm_bias_, eps_) : x;
  return at::linear(in, weight_, Optional(bias_));
}

MultimodalProjector::Mlp::Mlp(const ProjectorConfig& c) {
  linear_fc1 = RegisterModule("linear_fc1",
                              std::make_unique<LayerNormLinear>(c.input_size, c.ffn_hidden_size, c.add_bias_linear,
                                                                c.layernorm, c.layernorm_epsilon, c.init_method_std));
  linear_fc2 = RegisterModule("linear_fc2",
                              std::make_unique<transformer::Linear>(c.ffn_hidden_size, c.hidden_size,
                                                                    c.add_bias_linear,
                                                                    transformer::InitMethod{c.init_method_std}));
}

absl::StatusOr<std::unique_ptr<MultimodalProjector>> MultimodalProjector::Create(const ProjectorConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::unique_ptr<MultimodalProjector>(new MultimodalProjector(config));
}

MultimodalProjector::MultimodalProjector(const ProjectorConfig& config) : config_(config) {
  activation_config_.activation = config.activation;
  if (config.projector_type == ProjectorType::kMlp) {
    mlp_ = RegisterModule("encoder", std::make_unique<Mlp>(config));
  } else {
    affine_ = RegisterModule("encoder", std::make_unique<transformer::Linear>(
                                            config.input_size, config.hidden_size, config.add_bias_linear,
                                            transformer::InitMethod{config.init_method_std}));
  }
}

at::Tensor MultimodalProjector::Forward(const at::Tensor& x) const {
  if (affine_ != nullptr) return affine_->Forward(x);
  // The activation is a pure function of the config; the local backend's is the reference one.
  const at::Tensor hidden = transformer::LocalBackend()->Activation(activation_config_, mlp_->linear_fc1->Forward(x));
  return mlp_->linear_fc2->Forward(hidden);
}

}  // namespace megatron::models::vision
