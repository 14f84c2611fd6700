#include "megatron/core/transformer/transformer_block.h"

#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>

namespace megatron::transformer {

TransformerLayer::TransformerLayer(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                                   int layer_index, const ModelParallel& parallel, WithCrossAttention cross)
    : config_(config) {
  TORCH_CHECK(cross == WithCrossAttention::kNo || !parallel.enabled(),
              "TransformerLayer: cross attention is single-process only (no tensor parallelism yet)");
  const bool post = config.norm_placement == NormPlacement::kPost;
  // Registration order follows the computation (state dicts list parameters in this order).
  if (!post) input_layernorm_ = RegisterModule("input_layernorm", backend->MakeNorm(config, config.hidden_size));
  self_attention_ = RegisterModule("self_attention", std::make_unique<SelfAttention>(config, *backend, layer_index,
                                                                                      parallel));
  if (post) {
    post_self_attn_layernorm_ =
        RegisterModule("post_self_attn_layernorm", backend->MakeNorm(config, config.hidden_size));
  }
  if (cross == WithCrossAttention::kYes) {
    if (!post) {
      pre_cross_attn_layernorm_ =
          RegisterModule("pre_cross_attn_layernorm", backend->MakeNorm(config, config.hidden_size));
    }
    cross_attention_ = RegisterModule("cross_attention", std::make_unique<CrossAttention>(config, *backend));
    if (post) {
      post_cross_attn_layernorm_ =
          RegisterModule("post_cross_attn_layernorm", backend->MakeNorm(config, config.hidden_size));
    }
  }
  if (!post) pre_mlp_layernorm_ = RegisterModule("pre_mlp_layernorm", backend->MakeNorm(config, config.hidden_size));
  mlp_ = RegisterModule("mlp", std::make_unique<MLP>(config, backend, parallel));
  if (post) post_mlp_layernorm_ = RegisterModule("post_mlp_layernorm", backend->MakeNorm(config, config.hidden_size));
}

at::Tensor TransformerLayer::Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                                     const at::Tensor& attention_mask, const at::Tensor& attention_bias,
                                     const CrossAttentionInput* cross) const {
  TORCH_CHECK(cross_attention_ == nullptr || (cross != nullptr && cross->memory.defined()),
              "TransformerLayer: a decoder layer with cross attention needs the encoder output (memory)");
  const double p = config_.hidden_dropout;
  const bool train = training();
  if (config_.norm_placement == NormPlacement::kPost) {
    at::Tensor h = post_self_attn_layernorm_->Forward(
        x + at::dropout(self_attention_->Forward(x, rotary_freqs, cache, attention_mask, attention_bias), p, train));
    if (cross_attention_ != nullptr) {
      h = post_cross_attn_layernorm_->Forward(
          h + at::dropout(cross_attention_->Forward(h, cross->memory, cross->memory_mask), p, train));
    }
    return post_mlp_layernorm_->Forward(h + at::dropout(mlp_->Forward(h), p, train));
  }
  // Each residual add inside the layer feeds the next norm: Norm::ResidualAddForward does both (one fused kernel on
  // the fused backend) and returns the sum h as the next residual. Dropout stays a separate op on the branch, so
  // this is exact for any hidden_dropout. The layer's last add feeds the next layer's input_layernorm (or the
  // final layernorm), across the layer boundary: it stays a plain add.
  const at::Tensor attention_out = at::dropout(self_attention_->Forward(input_layernorm_->Forward(x), rotary_freqs,
                                                                        cache, attention_mask, attention_bias),
                                               p, train);
  Norm::ResidualAddResult normed;
  if (cross_attention_ != nullptr) {
    normed = pre_cross_attn_layernorm_->ResidualAddForward(attention_out, x);
    const at::Tensor cross_out =
        at::dropout(cross_attention_->Forward(normed.y, cross->memory, cross->memory_mask), p, train);
    normed = pre_mlp_layernorm_->ResidualAddForward(cross_out, normed.h);
  } else {
    normed = pre_mlp_layernorm_->ResidualAddForward(attention_out, x);
  }
  return normed.h + at::dropout(mlp_->Forward(normed.y), p, train);
}

TransformerBlock::LayerList::LayerList(const TransformerConfig& config,
                                       const std::shared_ptr<const BackendProvider>& backend,
                                       const ModelParallel& parallel, int begin, int end,
                                       WithCrossAttention cross) {
  for (int i = 0; i < config.num_layers; ++i) {
    auto layer = std::make_unique<TransformerLayer>(config, backend, i, parallel, cross);
    if (i < begin || i >= end) continue;  // Note [Pipeline initialisation]: drawn, then dropped
    layers.push_back(RegisterModule(std::to_string(i), std::move(layer)));
  }
}

TransformerBlock::TransformerBlock(const TransformerConfig& config, std::shared_ptr<const BackendProvider> backend,
                                   const ModelParallel& parallel, const BlockPart& part,
                                   WithCrossAttention cross) {
  const int end = part.layer_end < 0 ? config.num_layers : part.layer_end;
  TORCH_CHECK(0 <= part.layer_begin && part.layer_begin <= end && end <= config.num_layers,
              "TransformerBlock: layer range [", part.layer_begin, ", ", end, ") is outside [0, ",
              config.num_layers, ")");
  layers_ = RegisterModule("layers", std::make_unique<LayerList>(config, backend, parallel, part.layer_begin, end,
                                                                   cross));
  if (config.final_layernorm && part.final_layernorm) {
    final_layernorm_ = RegisterModule("final_layernorm", backend->MakeNorm(config, config.hidden_size));
  }
}

at::Tensor TransformerBlock::Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                                     const at::Tensor& attention_mask, const at::Tensor& attention_bias,
                                     const CrossAttentionInput* cross) const {
  at::Tensor h = x;
  for (const TransformerLayer* layer : layers_->layers) {
    h = layer->Forward(h, rotary_freqs, cache, attention_mask, attention_bias, cross);
  }
  return final_layernorm_ != nullptr ? final_layernorm_->Forward(h) : h;
}

}  // namespace megatron::transformer
