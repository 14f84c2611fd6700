#include "megatron/core/models/huggingface/hf_loader.h"

#include <set>

#include <nlohmann/json.hpp>
#include <ATen/ops/cat.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/models/huggingface/hf_common.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::models::huggingface {
namespace {

using transformer::TransformerConfig;

// The shared helpers under this file's historical names.
absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) { return ReadJsonObject(path); }

template <typename T>
absl::Status Get(const nlohmann::json& j, const std::string& path, const char* field, T* out,
                 std::optional<T> fallback = std::nullopt) {
  return GetJsonField<T>(j, path, field, out, fallback);
}

}  // namespace

absl::StatusOr<HfModelInfo> ReadHfModelInfo(const std::string& dir, const proto::ModelConfig& recipe_model) {
  const std::string path = dir + "/config.json";
  absl::StatusOr<nlohmann::json> j = ReadJson(path);
  if (!j.ok()) return j.status();
  HfModelInfo info;
  auto type = j->find("model_type");
  if (type == j->end() || !type->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing string field \"model_type\""));
  }
  info.model_type = type->get<std::string>();
  TransformerConfig& c = info.config;
  c.hidden_dropout = recipe_model.hidden_dropout();
  c.attention_dropout = recipe_model.attention_dropout();
  c.backend = recipe_model.backend() == proto::FUSED ? transformer::Backend::kFused : transformer::Backend::kLocal;
  c.use_scaled_init_for_output_layers = recipe_model.use_scaled_init_for_output_layers();
  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  if (info.model_type == "gpt2") {
    info.family = HfFamily::kGpt2;
    check(Get<int>(*j, path, "n_embd", &c.hidden_size));
    check(Get<int>(*j, path, "n_layer", &c.num_layers));
    check(Get<int>(*j, path, "n_head", &c.num_attention_heads));
    check(Get<int>(*j, path, "n_positions", &c.max_position_embeddings));
    check(Get<int>(*j, path, "vocab_size", &c.vocab_size));
    check(Get<double>(*j, path, "layer_norm_epsilon", &c.layernorm_epsilon, 1e-5));
    check(Get<double>(*j, path, "initializer_range", &c.init_method_std, 0.02));
    int inner = 0;
    check(Get<int>(*j, path, "n_inner", &inner, 0));
    if (!s.ok()) return s;
    auto act = j->find("activation_function");
    const std::string activation = act != j->end() && act->is_string() ? act->get<std::string>() : "gelu_new";
    if (activation == "gelu_new" || activation == "gelu_pytorch_tanh") {
      c.activation = transformer::Activation::kGeluTanh;
    } else if (activation == "gelu") {
      c.activation = transformer::Activation::kGelu;
    } else if (activation == "relu") {
      c.activation = transformer::Activation::kRelu;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ": field \"activation_function\": \"", activation,
                                                     "\" is not supported (gelu_new, gelu, relu)"));
    }
    if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": field \"n_head\" must divide n_embd"));
    }
    c.num_query_groups = c.num_attention_heads;
    c.kv_channels = c.hidden_size / c.num_attention_heads;
    c.ffn_hidden_size = inner > 0 ? inner : 4 * c.hidden_size;
    c.normalization = transformer::Normalization::kLayerNorm;
    c.position_embedding_type = transformer::PositionEmbedding::kLearnedAbsolute;
    c.add_bias_linear = c.add_qkv_bias = true;
    c.share_embeddings_and_output_weights = true;
  } else if (info.model_type == "llama" || info.model_type == "mistral" || info.model_type == "qwen2") {
    info.family = HfFamily::kLlama;
    check(Get<int>(*j, path, "hidden_size", &c.hidden_size));
    check(Get<int>(*j, path, "num_hidden_layers", &c.num_layers));
    check(Get<int>(*j, path, "num_attention_heads", &c.num_attention_heads));
    check(Get<int>(*j, path, "num_key_value_heads", &c.num_query_groups, c.num_attention_heads));
    check(Get<int>(*j, path, "intermediate_size", &c.ffn_hidden_size));
    check(Get<int>(*j, path, "max_position_embeddings", &c.max_position_embeddings));
    check(Get<int>(*j, path, "vocab_size", &c.vocab_size));
    check(Get<double>(*j, path, "rms_norm_eps", &c.layernorm_epsilon, 1e-6));
    check(Get<double>(*j, path, "rope_theta", &c.rotary_base, 10000.0));
    check(Get<double>(*j, path, "initializer_range", &c.init_method_std, 0.02));
    check(Get<bool>(*j, path, "tie_word_embeddings", &c.share_embeddings_and_output_weights, false));
    bool attention_bias = info.model_type == "qwen2", mlp_bias = false;
    check(Get<bool>(*j, path, "attention_bias", &attention_bias, attention_bias));
    check(Get<bool>(*j, path, "mlp_bias", &mlp_bias, false));
    if (!s.ok()) return s;
    int head_dim = 0;
    check(Get<int>(*j, path, "head_dim", &head_dim, 0));
    if (!s.ok()) return s;
    if (c.num_attention_heads <= 0) return absl::InvalidArgumentError(absl::StrCat(path, ": field \"num_attention_heads\" must be positive"));
    c.kv_channels = head_dim > 0 ? head_dim : c.hidden_size / c.num_attention_heads;
    auto act = j->find("hidden_act");
    if (act != j->end() && (!act->is_string() || act->get<std::string>() != "silu")) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": field \"hidden_act\" must be \"silu\" (SwiGLU)"));
    }
    auto scaling = j->find("rope_scaling");
    if (scaling != j->end() && !scaling->is_null()) {
      return absl::UnimplementedError(absl::StrCat(path, ": field \"rope_scaling\" is not supported yet"));
    }
    // transformers >= 5 writes {"rope_parameters": {"rope_theta": ..., "rope_type": "default"}}.
    auto rope = j->find("rope_parameters");
    if (rope != j->end() && rope->is_object()) {
      auto type = rope->find("rope_type");
      if (type != rope->end() && (!type->is_string() || type->get<std::string>() != "default")) {
        return absl::UnimplementedError(
            absl::StrCat(path, ": field \"rope_parameters.rope_type\" must be \"default\" (scaled RoPE is not supported yet)"));
      }
      check(Get<double>(*rope, path, "rope_theta", &c.rotary_base, c.rotary_base));
      if (!s.ok()) return s;
    }
    c.activation = transformer::Activation::kSwiGLU;
    c.normalization = transformer::Normalization::kRMSNorm;
    c.position_embedding_type = transformer::PositionEmbedding::kRope;
    if (info.model_type == "qwen2") {
      // Qwen2: biases on q/k/v only.
      c.add_qkv_bias = attention_bias;
      c.add_bias_linear = mlp_bias;
      if (mlp_bias) return absl::UnimplementedError(absl::StrCat(path, ": field \"mlp_bias\" true is not supported for qwen2"));
    } else {
      // Llama: attention_bias covers q/k/v/o, mlp_bias the MLP; Megatron's add_bias_linear covers o and the MLP.
      if (attention_bias != mlp_bias) {
        return absl::UnimplementedError(absl::StrCat(path, ": fields \"attention_bias\" and \"mlp_bias\" must agree"));
      }
      c.add_qkv_bias = c.add_bias_linear = attention_bias;
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field \"model_type\": \"", info.model_type,
                                                   "\" is not supported (gpt2, llama, mistral, qwen2)"));
  }
  if (absl::Status v = c.Validate(); !v.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", v.message()));
  return info;
}

absl::StatusOr<TransformerConfig> ReadHfConfig(const std::string& dir, const proto::ModelConfig& recipe_model) {
  absl::StatusOr<HfModelInfo> info = ReadHfModelInfo(dir, recipe_model);
  if (!info.ok()) return info.status();
  return info->config;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfStateDict(const std::map<std::string, at::Tensor>& hf_in,
                                                                    const HfModelInfo& info) {
  const TransformerConfig& c = info.config;
  const int ng = c.num_query_groups;
  std::map<std::string, at::Tensor> hf;
  for (const auto& [name, tensor] : hf_in) {
    absl::string_view n = name;
    if (info.family == HfFamily::kGpt2) absl::ConsumePrefix(&n, "transformer.");
    hf[std::string(n)] = tensor;
  }
  std::map<std::string, at::Tensor> out;
  std::set<std::string> used;
  auto take = [&](const std::string& name) -> at::Tensor {
    auto it = hf.find(name);
    if (it == hf.end()) return at::Tensor();
    used.insert(name);
    return it->second;
  };
  auto put = [&](const std::string& name, const at::Tensor& t) {
    if (t.defined()) out[name] = t.contiguous();
  };
  if (info.family == HfFamily::kGpt2) {
    put("embedding.word_embeddings.weight", take("wte.weight"));
    put("embedding.position_embeddings.weight", take("wpe.weight"));
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string h = absl::StrCat("h.", i, ".");
      const std::string m = absl::StrCat("decoder.layers.", i, ".");
      put(m + "input_layernorm.weight", take(h + "ln_1.weight"));
      put(m + "input_layernorm.bias", take(h + "ln_1.bias"));
      put(m + "pre_mlp_layernorm.weight", take(h + "ln_2.weight"));
      put(m + "pre_mlp_layernorm.bias", take(h + "ln_2.bias"));
      // Conv1D stores [in, out]; c_attn's out is [q; k; v].
      if (at::Tensor w = take(h + "attn.c_attn.weight"); w.defined()) {
        auto qkv = w.t().chunk(3, 0);
        put(m + "self_attention.linear_qkv.weight", GroupQkv(qkv[0], qkv[1], qkv[2], ng));
      }
      if (at::Tensor b = take(h + "attn.c_attn.bias"); b.defined()) {
        auto qkv = b.chunk(3, 0);
        put(m + "self_attention.linear_qkv.bias", GroupQkv(qkv[0], qkv[1], qkv[2], ng));
      }
      if (at::Tensor w = take(h + "attn.c_proj.weight"); w.defined()) put(m + "self_attention.linear_proj.weight", w.t());
      put(m + "self_attention.linear_proj.bias", take(h + "attn.c_proj.bias"));
      if (at::Tensor w = take(h + "mlp.c_fc.weight"); w.defined()) put(m + "mlp.linear_fc1.weight", w.t());
      put(m + "mlp.linear_fc1.bias", take(h + "mlp.c_fc.bias"));
      if (at::Tensor w = take(h + "mlp.c_proj.weight"); w.defined()) put(m + "mlp.linear_fc2.weight", w.t());
      put(m + "mlp.linear_fc2.bias", take(h + "mlp.c_proj.bias"));
      // Buffers some exports carry (causal mask tables); they are not parameters.
      take(h + "attn.bias");
      take(h + "attn.masked_bias");
    }
    put("decoder.final_layernorm.weight", take("ln_f.weight"));
    put("decoder.final_layernorm.bias", take("ln_f.bias"));
    take("lm_head.weight");  // tied to wte
  } else {
    put("embedding.word_embeddings.weight", take("model.embed_tokens.weight"));
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string h = absl::StrCat("model.layers.", i, ".");
      const std::string m = absl::StrCat("decoder.layers.", i, ".");
      put(m + "input_layernorm.weight", take(h + "input_layernorm.weight"));
      put(m + "pre_mlp_layernorm.weight", take(h + "post_attention_layernorm.weight"));
      for (const char* kind : {"weight", "bias"}) {
        at::Tensor q = take(h + "self_attn.q_proj." + kind), k = take(h + "self_attn.k_proj." + kind),
                   v = take(h + "self_attn.v_proj." + kind);
        if (q.defined() && k.defined() && v.defined()) {
          put(m + "self_attention.linear_qkv." + kind, GroupQkv(q, k, v, ng));
        } else if (q.defined() || k.defined() || v.defined()) {
          return absl::InvalidArgumentError(absl::StrCat(h, "self_attn: q_proj, k_proj and v_proj ", kind,
                                                         " must all be present"));
        }
        put(m + "self_attention.linear_proj." + kind, take(h + "self_attn.o_proj." + kind));
        at::Tensor gate = take(h + "mlp.gate_proj." + kind), up = take(h + "mlp.up_proj." + kind);
        if (gate.defined() && up.defined()) put(m + "mlp.linear_fc1." + kind, at::cat({gate, up}, 0));
        put(m + "mlp.linear_fc2." + kind, take(h + "mlp.down_proj." + kind));
      }
      take(h + "self_attn.rotary_emb.inv_freq");  // a buffer in older exports
    }
    put("decoder.final_layernorm.weight", take("model.norm.weight"));
    if (c.share_embeddings_and_output_weights) {
      take("lm_head.weight");
    } else {
      put("output_layer.weight", take("lm_head.weight"));
    }
  }
  std::vector<std::string> unknown;
  for (const auto& [name, tensor] : hf) {
    if (!used.count(name)) unknown.push_back(name);
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("HuggingFace ", info.model_type, " checkpoint: unexpected tensors: ",
                                                   absl::StrJoin(unknown, ", ")));
  }
  return out;
}

absl::Status LoadHfWeights(const std::string& dir, GPTModel& model) {
  absl::StatusOr<HfModelInfo> info = ReadHfModelInfo(dir, proto::ModelConfig());
  if (!info.ok()) return info.status();
  info->config = model.config();  // shapes agree with config.json; the model's own flags decide tying
  absl::StatusOr<std::map<std::string, at::Tensor>> hf = ReadHfTensors(dir, Dtype::kFloat32);
  if (!hf.ok()) return hf.status();
  absl::StatusOr<std::map<std::string, at::Tensor>> converted = ConvertHfStateDict(*hf, *info);
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", converted.status().message()));
  if (absl::Status s = model.LoadStateDict(*converted, transformer::LoadMode::kStrict); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace megatron::models::huggingface
