#include "legacy/model/transformer.h"

#include <cmath>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/silu.h>

#include "absl/strings/str_cat.h"
#include "legacy/model/fused_layer_norm.h"
#include "legacy/model/rms_norm.h"

namespace megatron::legacy {

using transformer::InitMethod;
using transformer::Linear;
using transformer::TransformerConfig;

absl::Status ValidateLegacyConfig(const TransformerConfig& config, const LegacyOptions& options) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (config.position_embedding_type != transformer::PositionEmbedding::kLearnedAbsolute) {
    return absl::InvalidArgumentError(
        "model.position_embedding_type: the legacy tree implements learned absolute position embeddings only");
  }
  if (config.norm_placement != transformer::NormPlacement::kPre) {
    return absl::InvalidArgumentError("model.norm_placement: legacy ParallelTransformerLayer is pre-norm");
  }
  if (config.activation == transformer::Activation::kQuickGelu) {
    return absl::InvalidArgumentError("model.activation: quick GeLU is not a legacy activation");
  }
  if (options.apply_layernorm_1p && config.normalization == transformer::Normalization::kRMSNorm) {
    return absl::InvalidArgumentError("apply_layernorm_1p: not supported with RMSNorm (as in Megatron's get_norm)");
  }
  if (options.fp16 && options.bf16) return absl::InvalidArgumentError("fp16 and bf16 cannot both be set");
  return absl::OkStatus();
}

std::unique_ptr<transformer::Norm> GetNorm(const TransformerConfig& config, const LegacyOptions& options) {
  if (config.normalization == transformer::Normalization::kRMSNorm) {
    return std::make_unique<RMSNorm>(config.hidden_size, config.layernorm_epsilon);
  }
  return std::make_unique<MixedFusedLayerNorm>(config.hidden_size, config.layernorm_epsilon,
                                               options.apply_layernorm_1p ? LayerNorm1p::kOn : LayerNorm1p::kOff);
}

ParallelAttention::ParallelAttention(const TransformerConfig& config, const LegacyOptions& options,
                                     int layer_number, AttnMaskType attn_mask_type, AttentionType attention_type)
    : config_(config), attention_type_(attention_type) {
  // CoreAttention: norm_factor = sqrt(hn) (or the config's softmax_scale), times the layer number with
  // query-key layer scaling, which the softmax then undoes in fp32.
  const double coeff = options.apply_query_key_layer_scaling ? std::max(1, layer_number) : 1.0;
  norm_factor_ = coeff / config.attention_scale();
  FusedScaleMaskSoftmaxOptions so;
  so.input_in_fp16 = options.fp16;
  so.input_in_bf16 = options.bf16;
  so.attn_mask_type = attn_mask_type;
  so.scaled_masked_softmax_fusion = options.masked_softmax_fusion;
  so.softmax_in_fp32 = options.attention_softmax_in_fp32 || options.apply_query_key_layer_scaling;
  if (options.apply_query_key_layer_scaling) so.scale = coeff;
  auto softmax = FusedScaleMaskSoftmax::Create(so);
  TORCH_CHECK(softmax.ok(), "ParallelAttention: ", softmax.status().ToString());
  softmax_ = *softmax;

  const bool qkv_bias = config.add_bias_linear || config.add_qkv_bias;
  if (attention_type == AttentionType::kSelf) {
    const int64_t qkv_size = config.query_projection_size() + 2 * config.kv_projection_size();
    query_key_value_ = RegisterModule("query_key_value", std::make_unique<Linear>(config.hidden_size, qkv_size, qkv_bias,
                                                                                  InitMethod{config.init_method_std}));
  } else {
    TORCH_CHECK(config.num_query_groups == config.num_attention_heads,
                "ParallelAttention: cross attention has no grouped-query form (model.num_query_groups=",
                config.num_query_groups, " must equal num_attention_heads=", config.num_attention_heads, ")");
    query_ = RegisterModule("query", std::make_unique<Linear>(config.hidden_size, config.query_projection_size(),
                                                              qkv_bias, InitMethod{config.init_method_std}));
    key_value_ = RegisterModule("key_value",
                                std::make_unique<Linear>(config.hidden_size, 2 * config.query_projection_size(),
                                                         qkv_bias, InitMethod{config.init_method_std}));
  }
  dense_ = RegisterModule("dense", std::make_unique<Linear>(config.query_projection_size(), config.hidden_size,
                                                            config.add_bias_linear,
                                                            InitMethod{config.output_layer_init_std()}));
}

at::Tensor ParallelAttention::Forward(const at::Tensor& hidden, const at::Tensor& mask,
                                      const at::Tensor& encoder_output) const {
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(2) == config_.hidden_size, "ParallelAttention: hidden must be [s, b, ",
              config_.hidden_size, "], got ", hidden.sizes());
  const int64_t sq = hidden.size(0), b = hidden.size(1);
  const int64_t np = config_.num_attention_heads, ng = config_.num_query_groups, hn = config_.kv_channels;
  const int64_t per_group = np / ng;
  at::Tensor q, k, v;
  if (attention_type_ == AttentionType::kSelf) {
    // Note [Legacy QKV layout]: [sq, b, ng, (np/ng + 2) hn] -> q [sq, b, np, hn], k and v [sq, b, ng, hn].
    at::Tensor mixed = query_key_value_->Forward(hidden).view({sq, b, ng, (per_group + 2) * hn});
    auto parts = mixed.split_with_sizes({per_group * hn, hn, hn}, 3);
    q = parts[0].reshape({sq, b, np, hn});
    k = parts[1];
    v = parts[2];
  } else {
    TORCH_CHECK(encoder_output.defined() && encoder_output.dim() == 3 && encoder_output.size(1) == b,
                "ParallelAttention (cross): encoder_output must be [sk, ", b, ", h]");
    // key_value: [sk, b, np, 2 hn], per head [k, v].
    auto kv = key_value_->Forward(encoder_output).view({encoder_output.size(0), b, np, 2 * hn}).split(hn, 3);
    k = kv[0];
    v = kv[1];
    q = query_->Forward(hidden).view({sq, b, np, hn});
  }
  if (per_group > 1) {
    k = k.repeat_interleave(per_group, 2);
    v = v.repeat_interleave(per_group, 2);
  }
  const int64_t sk = k.size(0);
  // CoreAttention: [sq, b, np, hn] -> [b*np, sq, hn]; scores = baddbmm(buffer, q, k^T, beta=0, alpha=1/nf).
  const at::Tensor q2 = q.reshape({sq, b * np, hn}).transpose(0, 1);
  const at::Tensor k2 = k.reshape({sk, b * np, hn}).transpose(0, 1);
  const at::Tensor buffer = at::empty({b * np, sq, sk}, q.options());
  at::Tensor scores = at::baddbmm(buffer, q2, k2.transpose(1, 2), /*beta=*/0.0, /*alpha=*/1.0 / norm_factor_)
                          .view({b, np, sq, sk});
  at::Tensor probs = softmax_->Forward(scores, mask);
  probs = at::dropout(probs, config_.attention_dropout, training());
  const at::Tensor v2 = v.reshape({sk, b * np, hn}).transpose(0, 1);
  at::Tensor context = at::bmm(probs.reshape({b * np, sq, sk}), v2).view({b, np, sq, hn});
  context = context.permute({2, 0, 1, 3}).reshape({sq, b, np * hn});
  return dense_->Forward(context);
}

ParallelMLP::ParallelMLP(const TransformerConfig& config) : config_(config) {
  const int64_t fc1_out = config.gated_linear_unit() ? 2 * config.ffn_hidden_size : config.ffn_hidden_size;
  dense_h_to_4h_ = RegisterModule("dense_h_to_4h", std::make_unique<Linear>(config.hidden_size, fc1_out,
                                                                            config.add_bias_linear,
                                                                            InitMethod{config.init_method_std}));
  dense_4h_to_h_ = RegisterModule(
      "dense_4h_to_h", std::make_unique<Linear>(config.ffn_hidden_size, config.hidden_size, config.add_bias_linear,
                                                InitMethod{config.output_layer_init_std()}));
}

at::Tensor ParallelMLP::Forward(const at::Tensor& hidden) const {
  at::Tensor x = dense_h_to_4h_->Forward(hidden);
  switch (config_.activation) {
    case transformer::Activation::kGelu: x = at::gelu(x); break;              // F.gelu (erf)
    case transformer::Activation::kGeluTanh: x = at::gelu(x, "tanh"); break;  // openai_gelu
    case transformer::Activation::kRelu: x = at::relu(x); break;
    case transformer::Activation::kSwiGLU: {
      auto halves = x.chunk(2, -1);  // [gate; up]
      x = at::silu(halves[0]) * halves[1];
      break;
    }
    case transformer::Activation::kQuickGelu: TORCH_CHECK(false, "ParallelMLP: quick GeLU is not legacy");
  }
  return dense_4h_to_h_->Forward(x);
}

ParallelTransformerLayer::ParallelTransformerLayer(const TransformerConfig& config, const LegacyOptions& options,
                                                   int layer_number, AttnMaskType self_attn_mask_type,
                                                   LayerType layer_type)
    : config_(config), options_(options) {
  input_norm_ = RegisterModule("input_norm", GetNorm(config, options));
  self_attention_ = RegisterModule("self_attention", std::make_unique<ParallelAttention>(
                                                         config, options, layer_number, self_attn_mask_type));
  post_attention_norm_ = RegisterModule("post_attention_norm", GetNorm(config, options));
  if (layer_type == LayerType::kDecoder) {
    inter_attention_ = RegisterModule(
        "inter_attention", std::make_unique<ParallelAttention>(config, options, layer_number, AttnMaskType::kPadding,
                                                               AttentionType::kCross));
    post_inter_attention_norm_ = RegisterModule("post_inter_attention_norm", GetNorm(config, options));
  }
  mlp_ = RegisterModule("mlp", std::make_unique<ParallelMLP>(config));
}

at::Tensor ParallelTransformerLayer::Forward(const at::Tensor& hidden, const at::Tensor& mask,
                                             const at::Tensor& encoder_output, const at::Tensor& enc_dec_mask) const {
  const bool post_ln_residual = options_.apply_residual_connection_post_layernorm;
  const at::Tensor norm1 = input_norm_->Forward(hidden);
  const at::Tensor attention = self_attention_->Forward(norm1, mask);
  // bias_dropout_add: residual + dropout(out + bias); the bias is already in `attention` (skip_bias_add folded).
  at::Tensor x = (post_ln_residual ? norm1 : hidden) + at::dropout(attention, config_.hidden_dropout, training());
  at::Tensor norm2 = post_attention_norm_->Forward(x);
  if (inter_attention_ != nullptr) {
    const at::Tensor cross = inter_attention_->Forward(norm2, enc_dec_mask, encoder_output);
    x = (post_ln_residual ? norm2 : x) + at::dropout(cross, config_.hidden_dropout, training());
    norm2 = post_inter_attention_norm_->Forward(x);
  }
  const at::Tensor mlp = mlp_->Forward(norm2);
  return (post_ln_residual ? norm2 : x) + at::dropout(mlp, config_.hidden_dropout, training());
}

ParallelTransformer::LayerList::LayerList(const TransformerConfig& config, const LegacyOptions& options,
                                          AttnMaskType mask_type, LayerType layer_type,
                                          std::vector<ParallelTransformerLayer*>* out) {
  for (int i = 0; i < config.num_layers; ++i) {
    out->push_back(RegisterModule(std::to_string(i), std::make_unique<ParallelTransformerLayer>(
                                                         config, options, i + 1, mask_type, layer_type)));
  }
}

ParallelTransformer::ParallelTransformer(const TransformerConfig& config, const LegacyOptions& options,
                                         AttnMaskType self_attn_mask_type, LayerType layer_type) {
  RegisterModule("layers", std::make_unique<LayerList>(config, options, self_attn_mask_type, layer_type, &layers_));
  final_norm_ = RegisterModule("final_norm", GetNorm(config, options));
}

at::Tensor ParallelTransformer::Forward(const at::Tensor& hidden, const at::Tensor& mask,
                                        const at::Tensor& encoder_output, const at::Tensor& enc_dec_mask) const {
  at::Tensor h = hidden;
  for (const ParallelTransformerLayer* layer : layers_) h = layer->Forward(h, mask, encoder_output, enc_dec_mask);
  return final_norm_->Forward(h);
}

}  // namespace megatron::legacy
