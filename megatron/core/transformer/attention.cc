#include "megatron/core/transformer/attention.h"

#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/tensor.h>

#include "megatron/core/parallel_state/context_parallel.h"
#include "megatron/core/tensor_parallel/mappings.h"


namespace megatron::transformer {

at::Tensor ContextParallelCausalMask(int64_t s_local, int cp, int cp_rank, const at::Device& device) {
  const int64_t s = s_local * cp;
  const std::vector<int64_t> local = parallel_state::ZigzagPositions(s, cp, cp_rank);
  std::vector<int64_t> keys;
  for (int r = 0; r < cp; ++r) {
    const std::vector<int64_t> p = parallel_state::ZigzagPositions(s, cp, r);
    keys.insert(keys.end(), p.begin(), p.end());
  }
  const auto opts = at::TensorOptions().dtype(at::kLong);
  const at::Tensor q_pos = at::tensor(local, opts).view({s_local, 1});
  const at::Tensor k_pos = at::tensor(keys, opts).view({1, s});
  return k_pos.gt(q_pos).view({1, 1, s_local, s}).to(device);  // true = masked (a later position)
}

SelfAttention::SelfAttention(const TransformerConfig& config, const BackendProvider& backend, int layer_index,
                             const ModelParallel& parallel)
    : config_(config),
      parallel_(parallel),
      layer_index_(layer_index),
      heads_(config.num_attention_heads / parallel.tp_size()),
      groups_(config.num_query_groups / parallel.tp_size()),
      backend_(&backend) {
  const int64_t qkv_size = config.query_projection_size() + 2 * config.kv_projection_size();
  const double output_std = config.output_layer_init_std();
  if (!parallel.enabled()) {
    linear_qkv_ = RegisterModule("linear_qkv", std::make_unique<Linear>(config.hidden_size, qkv_size,
                                                                        config.add_qkv_bias,
                                                                        InitMethod{config.init_method_std}));
    core_attention_ = backend.MakeCoreAttention(config);
    linear_proj_ = RegisterModule("linear_proj",
                                  std::make_unique<Linear>(config.query_projection_size(), config.hidden_size,
                                                           config.add_bias_linear, InitMethod{output_std}));
    return;
  }
  const int tp = parallel.tp_size();
  TORCH_CHECK(config.num_attention_heads % tp == 0, "SelfAttention: model.num_attention_heads=",
              config.num_attention_heads, " is not divisible by the tensor-parallel size ", tp);
  TORCH_CHECK(config.num_query_groups % tp == 0, "SelfAttention: model.num_query_groups=", config.num_query_groups,
              " is not divisible by the tensor-parallel size ", tp);
  const auto sp = parallel.sequence_parallel ? tensor_parallel::SequenceParallel::kOn
                                             : tensor_parallel::SequenceParallel::kOff;
  linear_qkv_tp_ = RegisterModule(
      "linear_qkv", std::make_unique<tensor_parallel::ColumnParallelLinear>(
                        config.hidden_size, qkv_size, config.add_qkv_bias, tensor_parallel::GatherOutput::kNo,
                        InitMethod{config.init_method_std}, parallel.tp, sp));
  core_attention_ = backend.MakeCoreAttention(config);
  linear_proj_tp_ = RegisterModule(
      "linear_proj", std::make_unique<tensor_parallel::RowParallelLinear>(
                         config.query_projection_size(), config.hidden_size, config.add_bias_linear,
                         tensor_parallel::InputIsParallel::kYes, InitMethod{output_std}, parallel.tp, sp));
}

at::Tensor SelfAttention::Forward(const at::Tensor& x, const at::Tensor& rotary_freqs, KVCache* cache,
                                  const at::Tensor& attention_mask, const at::Tensor& attention_bias) const {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == config_.hidden_size, "SelfAttention: x must be [s, b, ",
              config_.hidden_size, "], got ", x.sizes());
  // See Note [QKV layout]. Under sequence parallelism linear_qkv gathers the sequence: s is its output's.
  at::Tensor qkv = linear_qkv_ != nullptr ? linear_qkv_->Forward(x) : linear_qkv_tp_->Forward(x);
  const int64_t s = qkv.size(0), b = qkv.size(1);
  const int64_t ng = groups_, hn = config_.kv_channels;
  const int64_t heads_per_group = heads_ / ng;
  qkv = qkv.view({s, b, ng, (heads_per_group + 2) * hn});
  auto parts = qkv.split_with_sizes({heads_per_group * hn, hn, hn}, -1);
  at::Tensor q = parts[0].reshape({s, b, ng * heads_per_group, hn});
  at::Tensor k = parts[1];  // [s, b, ng, hn]
  at::Tensor v = parts[2];

  if (rotary_freqs.defined()) {
    q = backend_->ApplyRotaryPosEmb(q, rotary_freqs);
    k = backend_->ApplyRotaryPosEmb(k, rotary_freqs);
  }
  AttnMask mask_type = config_.attn_mask_type;
  at::Tensor mask = attention_mask;
  if (parallel_.cp_size() > 1) {
    TORCH_CHECK(cache == nullptr && config_.attn_mask_type == AttnMask::kCausal,
                "SelfAttention: context parallelism supports causal training attention only (no KV cache)");
    // Every rank's queries attend to every rank's keys: gather [s_local, b, ng, hn] over CP (backward
    // reduce-scatters the key/value gradients), then mask by global position.
    k = tensor_parallel::GatherFromSequenceParallelRegion(k.contiguous(), parallel_.cp);
    v = tensor_parallel::GatherFromSequenceParallelRegion(v.contiguous(), parallel_.cp);
    mask = ContextParallelCausalMask(s, parallel_.cp_size(), parallel_.cp_rank(), q.device());
    mask_type = AttnMask::kPadding;
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
  // k and v keep their ng groups: CoreAttention maps query head h to group h / heads_per_group (layers.h).
  const double dropout_p = training() ? config_.attention_dropout : 0.0;
  at::Tensor context = core_attention_->Forward(q, k, v, mask_type, dropout_p, mask,
                                                attention_bias);  // [b, np, s, hn]
  context = context.permute({2, 0, 1, 3}).reshape({s, b, heads_ * hn});
  return linear_proj_ != nullptr ? linear_proj_->Forward(context) : linear_proj_tp_->Forward(context);
}

}  // namespace megatron::transformer
