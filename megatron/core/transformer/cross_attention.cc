#include "megatron/core/transformer/cross_attention.h"

namespace megatron::transformer {

CrossAttention::CrossAttention(const TransformerConfig& config, const BackendProvider& backend)
    : config_(config) {
  const InitMethod init{config.init_method_std};
  linear_q_ = RegisterModule("linear_q", std::make_unique<Linear>(config.hidden_size, config.query_projection_size(),
                                                                  config.add_qkv_bias, init));
  linear_kv_ = RegisterModule("linear_kv", std::make_unique<Linear>(config.hidden_size,
                                                                    2 * config.kv_projection_size(),
                                                                    config.add_qkv_bias, init));
  core_attention_ = backend.MakeCoreAttention(config);
  linear_proj_ = RegisterModule("linear_proj",
                                std::make_unique<Linear>(config.query_projection_size(), config.hidden_size,
                                                         config.add_bias_linear,
                                                         InitMethod{config.output_layer_init_std()}));
}

at::Tensor CrossAttention::Forward(const at::Tensor& x, const at::Tensor& memory,
                                   const at::Tensor& memory_mask) const {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == config_.hidden_size && memory.dim() == 3 &&
                  memory.size(2) == config_.hidden_size && memory.size(1) == x.size(1),
              "CrossAttention: x must be [sq, b, ", config_.hidden_size, "] and memory [sk, b, ",
              config_.hidden_size, "], got ", x.sizes(), " and ", memory.sizes());
  const int64_t sq = x.size(0), sk = memory.size(0), b = x.size(1);
  const int64_t np = config_.num_attention_heads, ng = config_.num_query_groups, hn = config_.kv_channels;
  at::Tensor q = linear_q_->Forward(x).view({sq, b, np, hn}).permute({1, 2, 0, 3});  // [b, np, sq, hn]
  auto kv = linear_kv_->Forward(memory).view({sk, b, ng, 2 * hn}).split(hn, -1);
  // [b, ng, sk, hn]: CoreAttention maps query head h to group h / (np / ng) (layers.h).
  at::Tensor k = kv[0].permute({1, 2, 0, 3}), v = kv[1].permute({1, 2, 0, 3});
  const double dropout_p = training() ? config_.attention_dropout : 0.0;
  const AttnMask mask = memory_mask.defined() ? AttnMask::kPadding : AttnMask::kNone;
  at::Tensor context = core_attention_->Forward(q, k, v, mask, dropout_p, memory_mask);  // [b, np, sq, hn]
  context = context.permute({2, 0, 1, 3}).reshape({sq, b, np * hn});
  return linear_proj_->Forward(context);
}

}  // namespace megatron::transformer
