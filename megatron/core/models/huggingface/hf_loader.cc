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
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::models::huggingface {
namespace {

using transformer::TransformerConfig;

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = utils::ReadFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  return j;
}

// Reads a required (or defaulted) numeric field, naming the file and field on error.
template <typename T>
absl::Status Get(const nlohmann::json& j, const std::string& path, const char* field, T* out,
                 std::optional<T> fallback = std::nullopt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback) {
      *out = *fallback;
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing field \"", field, "\""));
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", field, "\" must be a boolean"));
  } else {
    if (!it->is_number()) return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", field, "\" must be a number"));
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

// [ng*hpg*hn + 2*ng*hn] rows in HF order (all q heads, then all k heads, then all v heads) -> Megatron's grouped
// order [ng, hpg+2, hn]. Works on weights [rows, in] and biases [rows].
at::Tensor GroupQkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int ng) {
  std::vector<int64_t> tail(q.sizes().begin() + 1, q.sizes().end());
  auto grouped = [&](const at::Tensor& t) {
    std::vector<int64_t> shape = {ng, t.size(0) / ng};
    shape.insert(shape.end(), tail.begin(), tail.end());
    return t.reshape(shape);
  };
  std::vector<int64_t> out_shape = {q.size(0) + k.size(0) + v.size(0)};
  out_shape.insert(out_shape.end(), tail.begin(), tail.end());
  return at::cat({grouped(q), grouped(k), grouped(v)}, 1).reshape(out_shape);
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
  std::vector<std::string> files;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (utils::PathExists(index_path)) {
    absl::StatusOr<nlohmann::json> index = ReadJson(index_path);
    if (!index.ok()) return index.status();
    auto map = index->find("weight_map");
    if (map == index->end() || !map->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing object field \"weight_map\""));
    }
    std::set<std::string> unique;
    for (auto& [name, file] : map->items()) {
      if (file.is_string()) unique.insert(file.get<std::string>());
    }
    for (const auto& f : unique) files.push_back(dir + "/" + f);
  } else {
    files.push_back(dir + "/model.safetensors");
  }
  std::map<std::string, at::Tensor> hf;
  for (const auto& file : files) {
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = checkpointing::LoadSafetensors(file);
    if (!tensors.ok()) return tensors.status();
    for (auto& [name, tensor] : *tensors) hf[name] = tensor.to(at::kFloat);
  }
  absl::StatusOr<std::map<std::string, at::Tensor>> converted = ConvertHfStateDict(hf, *info);
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", converted.status().message()));
  if (absl::Status s = model.LoadStateDict(*converted, transformer::LoadMode::kStrict); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace megatron::models::huggingface
