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
                                       const ModelParallel& parallel, int begin, int end) {
  for (int i = 0; i < config.num_layers; ++i) {
    auto layer = std::make_unique<TransformerLayer>(config, backend, i, parallel);
    if (i < begin || i >= end) continue;  // Note [Pipeline initialisation]: drawn, then dropped
    layers.push_back(RegisterModule(std::to_string(i), std::move(layer)));
  }
}

TransformerBlock::TransformerBlock(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                                   const ModelParallel& parallel, const BlockPart& part) {
  const int end = part.layer_end < 0 ? config.num_layers : part.layer_end;
  TORCH_CHECK(0 <= part.layer_begin && part.layer_begin <= end && end <= config.num_layers,
              "TransformerBlock: layer range [", part.layer_begin, ", ", end, ") is outside [0, ",
              config.num_layers, ")");
  layers_ = RegisterModule("layers", std::make_unique<LayerList>(config, backend, parallel, part.layer_begin, end));
  if (config.final_layernorm && part.final_layernorm) {
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
