#include "megatron/core/transformer/transformer_block.h"

#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>

namespace megatron::transformer {

TransformerLayer::TransformerLayer(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                                   int layer_index, const ModelParallel& parallel)
    : config_(config) {
  input_layernorm_ = RegisterModule("input_layernorm", backend->MakeNorm(config, config.hidden_size));
  self_attention_ = RegisterModule("self_attention", std::make_unique<SelfAttention>(config, *backend, layer_index,
                                                                                      parallel));
  pre_mlp_layernorm_ = RegisterModule("pre_mlp_layernorm", backend->MakeNorm(config, config.hidden_size));
  mlp_ = RegisterModule("mlp", std::make_unique<MLP>(config, backend, parallel));
}

at::Tensor TransformerLayer::Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                                     const at::Tensor& attention_mask) const {
  const double p = config_.hidden_dropout;
  at::Tensor h = x + at::dropout(self_attention_->Forward(input_layernorm_->Forward(x), rotary_freqs, cache,
                                                                         attention_mask), p,
                                 training());
  return h + at::dropout(mlp_->Forward(pre_mlp_layernorm_->Forward(h)), p, training());
}

TransformerBlock::LayerList::LayerList(const TransformerConfig& config,
                                       const std::shared_ptr<const BackendProvider>& backend,
                                       const ModelParallel& parallel) {
  for (int i = 0; i < config.num_layers; ++i) {
    layers.push_back(
        RegisterModule(std::to_string(i), std::make_unique<TransformerLayer>(config, backend, i, parallel)));
  }
}

TransformerBlock::TransformerBlock(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                                   const ModelParallel& parallel) {
  layers_ = RegisterModule("layers", std::make_unique<LayerList>(config, backend, parallel));
  if (config.final_layernorm) {
    final_layernorm_ = RegisterModule("final_layernorm", backend->MakeNorm(config, config.hidden_size));
  }
}

at::Tensor TransformerBlock::Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                                     const at::Tensor& attention_mask) const {
  at::Tensor h = x;
  for (const TransformerLayer* layer : layers_->layers) h = layer->Forward(h, rotary_freqs, cache, attention_mask);
  return final_layernorm_ != nullptr ? final_layernorm_->Forward(h) : h;
}

}  // namespace megatron::transformer
