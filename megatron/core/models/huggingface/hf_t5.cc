#include "megatron/core/models/huggingface/hf_t5.h"

#include <set>
#include <vector>

#include <ATen/ops/cat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "megatron/core/models/huggingface/hf_common.h"
#include "megatron/core/proto/recipe.pb.h"

namespace megatron::models::huggingface {

absl::StatusOr<HfT5Info> ReadHfT5Config(const std::string& dir, const proto::ModelConfig& recipe_model) {
  const std::string path = dir + "/config.json";
  absl::StatusOr<nlohmann::json> j = ReadModelConfig(dir, "t5");
  if (!j.ok()) return j.status();
  HfT5Info info;
  transformer::TransformerConfig& c = info.config;
  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  int encoder_layers = 0;
  bool tied = true;
  check(GetJsonField<int>(*j, path, "d_model", &c.hidden_size));
  check(GetJsonField<int>(*j, path, "num_layers", &encoder_layers));
  check(GetJsonField<int>(*j, path, "num_heads", &c.num_attention_heads));
  check(GetJsonField<int>(*j, path, "d_kv", &c.kv_channels));
  check(GetJsonField<int>(*j, path, "d_ff", &c.ffn_hidden_size));
  check(GetJsonField<int>(*j, path, "vocab_size", &c.vocab_size));
  check(GetJsonField<int>(*j, path, "relative_attention_num_buckets", &info.options.relative_attention_num_buckets, 32));
  check(GetJsonField<int>(*j, path, "relative_attention_max_distance", &info.options.relative_attention_max_distance,
                          128));
  check(GetJsonField<double>(*j, path, "layer_norm_epsilon", &c.layernorm_epsilon, 1e-6));
  check(GetJsonField<bool>(*j, path, "tie_word_embeddings", &tied, true));
  if (!s.ok()) return s;
  check(GetJsonField<int>(*j, path, "num_decoder_layers", &c.num_layers, encoder_layers));
  // transformers >= 5 records the scaling separately; older configs imply it from tying.
  check(GetJsonField<bool>(*j, path, "scale_decoder_outputs", &info.options.scale_decoder_outputs, tied));
  if (!s.ok()) return s;
  auto ff = j->find("feed_forward_proj");
  const std::string proj = ff != j->end() && ff->is_string() ? ff->get<std::string>() : "relu";
  if (proj == "relu") {
    c.activation = transformer::Activation::kRelu;
  } else if (proj == "gelu") {
    c.activation = transformer::Activation::kGelu;
  } else {
    return absl::UnimplementedError(absl::StrCat(path, ": field \"feed_forward_proj\": \"", proj,
                                                 "\" is not supported (relu, gelu; gated MLPs not yet)"));
  }
  info.options.encoder_num_layers = encoder_layers;
  info.options.output_layer_bias = false;
  c.num_query_groups = c.num_attention_heads;
  c.normalization = transformer::Normalization::kRMSNorm;
  c.position_embedding_type = transformer::PositionEmbedding::kRelative;
  c.add_bias_linear = c.add_qkv_bias = false;
  c.share_embeddings_and_output_weights = tied;
  c.softmax_scale = 1.0;
  c.final_layernorm = true;
  // Learned absolute positions are unused with relative ones; the field only has to validate.
  c.max_position_embeddings = 1;
  c.hidden_dropout = recipe_model.hidden_dropout();
  c.attention_dropout = recipe_model.attention_dropout();
  c.use_scaled_init_for_output_layers = recipe_model.use_scaled_init_for_output_layers();
  c.backend = recipe_model.backend() == proto::FUSED ? transformer::Backend::kFused : transformer::Backend::kLocal;
  if (absl::Status v = c.Validate(); !v.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", v.message()));
  if (encoder_layers <= 0) return absl::InvalidArgumentError(absl::StrCat(path, ": field \"num_layers\" must be positive"));
  return info;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfT5StateDict(const std::map<std::string, at::Tensor>& hf,
                                                                      const HfT5Info& info) {
  const transformer::TransformerConfig& c = info.config;
  const int ng = c.num_query_groups;
  const int64_t hn = c.kv_channels;
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
  // HF q/k/v -> Megatron's grouped QKV; all present or none (a subset of gradients may omit them).
  auto self_attention = [&](const std::string& h, const std::string& m) -> absl::Status {
    at::Tensor q = take(h + "q.weight"), k = take(h + "k.weight"), v = take(h + "v.weight");
    if (q.defined() && k.defined() && v.defined()) {
      put(m + "linear_qkv.weight", GroupQkv(q, k, v, ng));
    } else if (q.defined() || k.defined() || v.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(h, "{q,k,v}.weight must all be present"));
    }
    put(m + "linear_proj.weight", take(h + "o.weight"));
    return absl::OkStatus();
  };
  put("embedding.word_embeddings.weight", take("shared.weight"));
  take("encoder.embed_tokens.weight");  // tied to shared
  take("decoder.embed_tokens.weight");
  const struct {
    const char* hf;
    const char* megatron;
    int layers;
  } stacks[] = {{"encoder", "encoder", info.options.encoder_num_layers > 0 ? info.options.encoder_num_layers : c.num_layers},
                {"decoder", "decoder", c.num_layers}};
  for (const auto& stack : stacks) {
    const bool decoder = std::string(stack.hf) == "decoder";
    put(absl::StrCat(stack.megatron, "_relative_pos_emb.relative_attention_bias.weight"),
        take(absl::StrCat(stack.hf, ".block.0.layer.0.SelfAttention.relative_attention_bias.weight")));
    for (int i = 0; i < stack.layers; ++i) {
      const std::string h = absl::StrCat(stack.hf, ".block.", i, ".layer.");
      const std::string m = absl::StrCat(stack.megatron, ".layers.", i, ".");
      if (absl::Status st = self_attention(h + "0.SelfAttention.", m + "self_attention."); !st.ok()) return st;
      put(m + "input_layernorm.weight", take(h + "0.layer_norm.weight"));
      int mlp = 1;
      if (decoder) {
        const std::string x = h + "1.EncDecAttention.";
        put(m + "cross_attention.linear_q.weight", take(x + "q.weight"));
        at::Tensor k = take(x + "k.weight"), v = take(x + "v.weight");
        if (k.defined() && v.defined()) {
          // [ng * hn, h] each -> [ng, 2, hn, h]: per group its key head, then its value head.
          put(m + "cross_attention.linear_kv.weight",
              at::cat({k.reshape({ng, hn, -1}), v.reshape({ng, hn, -1})}, 1).reshape({2 * ng * hn, -1}));
        } else if (k.defined() || v.defined()) {
          return absl::InvalidArgumentError(absl::StrCat(x, "{k,v}.weight must both be present"));
        }
        put(m + "cross_attention.linear_proj.weight", take(x + "o.weight"));
        put(m + "pre_cross_attn_layernorm.weight", take(h + "1.layer_norm.weight"));
        mlp = 2;
      }
      put(m + "mlp.linear_fc1.weight", take(absl::StrCat(h, mlp, ".DenseReluDense.wi.weight")));
      put(m + "mlp.linear_fc2.weight", take(absl::StrCat(h, mlp, ".DenseReluDense.wo.weight")));
      put(m + "pre_mlp_layernorm.weight", take(absl::StrCat(h, mlp, ".layer_norm.weight")));
    }
    put(absl::StrCat(stack.megatron, ".final_layernorm.weight"), take(absl::StrCat(stack.hf, ".final_layer_norm.weight")));
  }
  if (c.share_embeddings_and_output_weights) {
    take("lm_head.weight");
  } else {
    put("lm_head.output_layer.weight", take("lm_head.weight"));
  }
  std::vector<std::string> unknown;
  for (const auto& [name, tensor] : hf) {
    if (!used.count(name)) unknown.push_back(name);
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("HuggingFace t5 checkpoint: unexpected tensors: ", absl::StrJoin(unknown, ", ")));
  }
  return out;
}

absl::Status LoadHfT5Weights(const std::string& dir, T5Model& model) {
  absl::StatusOr<std::map<std::string, at::Tensor>> hf = ReadHfTensors(dir, Dtype::kFloat32);
  if (!hf.ok()) return hf.status();
  absl::StatusOr<std::map<std::string, at::Tensor>> converted =
      ConvertHfT5StateDict(*hf, HfT5Info{model.config(), model.options()});
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", converted.status().message()));
  if (absl::Status s = model.LoadStateDict(*converted, transformer::LoadMode::kStrict); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace megatron::models::huggingface
