#include "megatron/core/transformer/mlp.h"

#include <cmath>

namespace megatron::transformer {

MLP::MLP(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
         const ModelParallel& parallel)
    : config_(config), backend_(std::move(backend)) {
  const int64_t fc1_out = config.gated_linear_unit() ? 2 * config.ffn_hidden_size : config.ffn_hidden_size;
  const double output_std = config.output_layer_init_std();
  if (parallel.enabled()) {
    const int tp = parallel.tp_size();
    TORCH_CHECK(config.ffn_hidden_size % tp == 0, "MLP: model.ffn_hidden_size=", config.ffn_hidden_size,
                " is not divisible by the tensor-parallel size ", tp);
    const auto sp = parallel.sequence_parallel ? tensor_parallel::SequenceParallel::kOn
                                               : tensor_parallel::SequenceParallel::kOff;
    linear_fc1_tp_ = RegisterModule(
        "linear_fc1", std::make_unique<tensor_parallel::ColumnParallelLinear>(
                          config.hidden_size, fc1_out, config.add_bias_linear, tensor_parallel::GatherOutput::kNo,
                          InitMethod{config.init_method_std}, parallel.tp, sp,
                          /*partition_stride=*/config.gated_linear_unit() ? 2 : 1));
    linear_fc2_tp_ = RegisterModule(
        "linear_fc2", std::make_unique<tensor_parallel::RowParallelLinear>(
                          config.ffn_hidden_size, config.hidden_size, config.add_bias_linear,
                          tensor_parallel::InputIsParallel::kYes, InitMethod{output_std}, parallel.tp, sp));
    return;
  }
  linear_fc1_ = RegisterModule("linear_fc1", std::make_unique<Linear>(config.hidden_size, fc1_out,
                                                                      config.add_bias_linear,
                                                                      InitMethod{config.init_method_std}));
  linear_fc2_ = RegisterModule("linear_fc2", std::make_unique<Linear>(config.ffn_hidden_size, config.hidden_size,
                                                                      config.add_bias_linear,
                                                                      InitMethod{output_std}));
}

at::Tensor MLP::Forward(const at::Tensor& x) const {
  if (linear_fc1_tp_ != nullptr) {
    return linear_fc2_tp_->Forward(backend_->Activation(config_, linear_fc1_tp_->Forward(x)));
  }
  return linear_fc2_->Forward(backend_->Activation(config_, linear_fc1_->Forward(x)));
}

}  // namespace megatron::transformer
