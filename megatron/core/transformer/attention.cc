#include "megatron/core/transformer/attention.h"

#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>

#include "megatron/core/models/common/rotary_pos_embedding.h"

namespace megatron::transformer {

SelfAttention::SelfAttention(const TransformerConfig& config, const BackendProvider& backend, int layer_index)
    : config_(config), layer_index_(layer_index) {
  const int64_t qkv_size = config.query_projection_size() + 2 * config.kv_projection_size();
  const double output_std = config.output_layer_init_std();
  linear_qkv_ = RegisterModule("linear_qkv", std::make_unique<Linear>(config.hidden_size, qkv_size,
                                                                      config.add_qkv_bias,
                                                                      InitMethod{config.init_method_std}));
  core_attention_ = backend.MakeCoreAttention(config);
  linear_proj_ = RegisterModule("linear_proj",
                                std::make_unique<Linear>(config.query_projection_size(), config.hidden_size,
                                                         config.add_bias_linear, InitMethod{output_std}));
}

at::Tensor SelfAttention::Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache) const {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == config_.hidden_size, "SelfAttention: x must be [s, b, ",
              config_.hidden_size, "], got ", x.sizes());
  const int64_t s = x.size(0), b = x.size(1);
  const int64_t ng = config_.num_query_groups, hn = config_.kv_channels;
  const int64_t heads_per_group = config_.num_attention_heads / ng;

  // See Note [QKV layout].
  at::Tensor qkv = linear_qkv_->Forward(x).view({s, b, ng, (heads_per_group + 2) * hn});
  auto parts = qkv.split_with_sizes({heads_per_group * hn, hn, hn}, -1);
  at::Tensor q = parts[0].reshape({s, b, ng * heads_per_group, hn});
  at::Tensor k = parts[1];  // [s, b, ng, hn]
  at::Tensor v = parts[2];

  if (rotary_freqs.defined()) {
    q = models::ApplyRotaryPosEmb(q, rotary_freqs);
    k = models::ApplyRotaryPosEmb(k, rotary_freqs);
  }
  // [s, b, n, hn] -> [b, n, s, hn]
  q = q.permute({1, 2, 0, 3});
  k = k.permute({1, 2, 0, 3});
  v = v.permute({1, 2, 0, 3});
  if (cache != nullptr) {
    at::Tensor& ck = cache->keys[layer_index_];
    at::Tensor& cv = cache->values[layer_index_];
    if (ck.defined()) {
      k = at::cat({ck, k}, 2);
      v = at::cat({cv, v}, 2);
    }
    ck = k;
    cv = v;
  }
  if (heads_per_group > 1) {
    // Each query head h attends with the key/value head of its group h / heads_per_group.
    k = k.repeat_interleave(heads_per_group, 1);
    v = v.repeat_interleave(heads_per_group, 1);
  }
  const double dropout_p = training() ? config_.attention_dropout : 0.0;
  at::Tensor context = core_attention_->Forward(q, k, v, AttnMask::kCausal, dropout_p);  // [b, np, s, hn]
  context = context.permute({2, 0, 1, 3}).reshape({s, b, config_.query_projection_size()});
  return linear_proj_->Forward(context);
}

}  // namespace megatron::transformer
