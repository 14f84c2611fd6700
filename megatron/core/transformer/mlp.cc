#include "megatron/core/transformer/mlp.h"

#include <cmath>

namespace megatron::transformer {

MLP::MLP(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend)
    : config_(config), backend_(std::move(backend)) {
  const int64_t fc1_out = config.gated_linear_unit() ? 2 * config.ffn_hidden_size : config.ffn_hidden_size;
  const double output_std = config.output_layer_init_std();
  linear_fc1_ = RegisterModule("linear_fc1", std::make_unique<Linear>(config.hidden_size, fc1_out,
                                                                      config.add_bias_linear,
                                                                      InitMethod{config.init_method_std}));
  linear_fc2_ = RegisterModule("linear_fc2", std::make_unique<Linear>(config.ffn_hidden_size, config.hidden_size,
                                                                      config.add_bias_linear,
                                                                      InitMethod{output_std}));
}

at::Tensor MLP::Forward(const at::Tensor& x) const {
  return linear_fc2_->Forward(backend_->Activation(config_, linear_fc1_->Forward(x)));
}

}  // namespace megatron::transformer
