#include "megatron/core/models/huggingface/hf_bert.h"

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "megatron/core/models/huggingface/hf_common.h"
#include "megatron/core/proto/recipe.pb.h"

namespace megatron::models::huggingface {

absl::StatusOr<HfBertInfo> ReadHfBertConfig(const std::string& dir, const proto::ModelConfig& recipe_model) {
  const std::string path = dir + "/config.json";
  absl::StatusOr<nlohmann::json> j = ReadModelConfig(dir, "bert");
  if (!j.ok()) return j.status();
  HfBertInfo info;
  transformer::TransformerConfig& c = info.config;
  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  check(GetJsonField<int>(*j, path, "hidden_size", &c.hidden_size));
  check(GetJsonField<int>(*j, path, "num_hidden_layers", &c.num_layers));
  check(GetJsonField<int>(*j, path, "num_attention_heads", &c.num_attention_heads));
  check(GetJsonField<int>(*j, path, "intermediate_size", &c.ffn_hidden_size));
  check(GetJsonField<int>(*j, path, "max_position_embeddings", &c.max_position_embeddings));
  check(GetJsonField<int>(*j, path, "vocab_size", &c.vocab_size));
  check(GetJsonField<int>(*j, path, "type_vocab_size", &info.options.num_tokentypes, 2));
  check(GetJsonField<double>(*j, path, "layer_norm_eps", &c.layernorm_epsilon, 1e-12));
  check(GetJsonField<double>(*j, path, "initializer_range", &c.init_method_std, 0.02));
  if (!s.ok()) return s;
  auto act = j->find("hidden_act");
  if (act != j->end() && (!act->is_string() || act->get<std::string>() != "gelu")) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field \"hidden_act\" must be \"gelu\" (exact GeLU)"));
  }
  auto pos = j->find("position_embedding_type");
  if (pos != j->end() && !pos->is_null() && (!pos->is_string() || pos->get<std::string>() != "absolute")) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field \"position_embedding_type\" must be \"absolute\""));
  }
  if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field \"num_attention_heads\" must divide hidden_size"));
  }
  c.num_query_groups = c.num_attention_heads;
  c.kv_channels = c.hidden_size / c.num_attention_heads;
  c.normalization = transformer::Normalization::kLayerNorm;
  c.activation = transformer::Activation::kGelu;
  c.position_embedding_type = transformer::PositionEmbedding::kLearnedAbsolute;
  c.add_bias_linear = c.add_qkv_bias = true;
  c.share_embeddings_and_output_weights = true;
  c.attn_mask_type = transformer::AttnMask::kPadding;
  c.norm_placement = transformer::NormPlacement::kPost;
  c.final_layernorm = false;
  c.hidden_dropout = recipe_model.hidden_dropout();
  c.attention_dropout = recipe_model.attention_dropout();
  c.use_scaled_init_for_output_layers = recipe_model.use_scaled_init_for_output_layers();
  c.backend = recipe_model.backend() == proto::FUSED ? transformer::Backend::kFused : transformer::Backend::kLocal;
  info.options.add_binary_head = true;
  info.options.embedding_layernorm = true;
  if (absl::Status v = c.Validate(); !v.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", v.message()));
  return info;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfBertStateDict(
    const std::map<std::string, at::Tensor>& hf_in, const transformer::TransformerConfig& c) {
  std::map<std::string, at::Tensor> hf;
  for (const auto& [name, tensor] : hf_in) {
    absl::string_view n = name;
    absl::ConsumePrefix(&n, "bert.");
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
  auto put_pair = [&](const std::string& megatron, const std::string& hf_name) {
    for (const char* kind : {".weight", ".bias"}) put(megatron + kind, take(hf_name + kind));
  };
  put("embedding.word_embeddings.weight", take("embeddings.word_embeddings.weight"));
  put("embedding.position_embeddings.weight", take("embeddings.position_embeddings.weight"));
  put("embedding.tokentype_embeddings.weight", take("embeddings.token_type_embeddings.weight"));
  put_pair("embedding.layernorm", "embeddings.LayerNorm");
  take("embeddings.position_ids");  // a buffer in older exports
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string h = absl::StrCat("encoder.layer.", i, ".");
    const std::string m = absl::StrCat("encoder.layers.", i, ".");
    for (const char* kind : {"weight", "bias"}) {
      at::Tensor q = take(h + "attention.self.query." + kind), k = take(h + "attention.self.key." + kind),
                 v = take(h + "attention.self.value." + kind);
      if (q.defined() && k.defined() && v.defined()) {
        put(m + "self_attention.linear_qkv." + kind, GroupQkv(q, k, v, c.num_query_groups));
      } else if (q.defined() || k.defined() || v.defined()) {
        return absl::InvalidArgumentError(absl::StrCat(h, "attention.self: query, key and value ", kind,
                                                       " must all be present"));
      }
    }
    put_pair(m + "self_attention.linear_proj", h + "attention.output.dense");
    put_pair(m + "post_self_attn_layernorm", h + "attention.output.LayerNorm");
    put_pair(m + "mlp.linear_fc1", h + "intermediate.dense");
    put_pair(m + "mlp.linear_fc2", h + "output.dense");
    put_pair(m + "post_mlp_layernorm", h + "output.LayerNorm");
  }
  put_pair("pooler.dense", "pooler.dense");
  put_pair("lm_head.dense", "cls.predictions.transform.dense");
  put_pair("lm_head.layer_norm", "cls.predictions.transform.LayerNorm");
  put("output_layer.bias", take("cls.predictions.bias"));
  put_pair("binary_head", "cls.seq_relationship");
  // Tied: the decoder's weight is the word embedding and its bias is cls.predictions.bias.
  take("cls.predictions.decoder.weight");
  take("cls.predictions.decoder.bias");
  std::vector<std::string> unknown;
  for (const auto& [name, tensor] : hf) {
    if (!used.count(name)) unknown.push_back(name);
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("HuggingFace bert checkpoint: unexpected tensors: ", absl::StrJoin(unknown, ", ")));
  }
  return out;
}

absl::Status LoadHfBertWeights(const std::string& dir, BertModel& model) {
  absl::StatusOr<std::map<std::string, at::Tensor>> hf = ReadHfTensors(dir, Dtype::kFloat32);
  if (!hf.ok()) return hf.status();
  absl::StatusOr<std::map<std::string, at::Tensor>> converted = ConvertHfBertStateDict(*hf, model.config());
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", converted.status().message()));
  if (absl::Status s = model.LoadStateDict(*converted, transformer::LoadMode::kStrict); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace megatron::models::huggingface
