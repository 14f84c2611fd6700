#include "megatron/core/models/huggingface/hf_vision.h"

#include <set>
#include <vector>

#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "megatron/core/models/huggingface/hf_common.h"

namespace megatron::models::huggingface {
namespace {

using vision::VisionConfig;
using vision::VisionSubtype;

constexpr char kPrefix[] = "vision_model.";

// transformers' CLIPVisionConfig / SiglipVisionConfig defaults, for sparse vision_config objects.
struct HfVisionDefaults {
  int hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, image_size, patch_size;
  const char* hidden_act;
  double layer_norm_eps;
};
constexpr HfVisionDefaults kClipDefaults{768, 3072, 12, 12, 224, 32, "quick_gelu", 1e-5};
constexpr HfVisionDefaults kSiglipDefaults{768, 3072, 12, 12, 224, 16, "gelu_pytorch_tanh", 1e-6};

// A full model's tensors that are not the vision tower.
bool IsOtherTower(absl::string_view name) {
  return absl::StartsWith(name, "text_model.") || absl::StartsWith(name, "visual_projection.") ||
         absl::StartsWith(name, "text_projection.") || name == "logit_scale" || name == "logit_bias";
}

}  // namespace

absl::StatusOr<HfVisionInfo> ReadHfVisionInfo(const std::string& dir) {
  const std::string path = dir + "/config.json";
  absl::StatusOr<nlohmann::json> root = ReadJsonObject(path);
  if (!root.ok()) return root.status();
  absl::StatusOr<std::string> model_type = GetJsonString(*root, path, "model_type");
  if (!model_type.ok()) return model_type.status();
  HfVisionInfo info;
  info.model_type = *model_type;
  VisionSubtype subtype;
  const nlohmann::json* j = &*root;
  std::string where = path;  // names the object the fields come from
  if (*model_type == "clip_vision_model" || *model_type == "siglip_vision_model") {
    subtype = *model_type == "clip_vision_model" ? VisionSubtype::kClip : VisionSubtype::kSiglip;
  } else if (*model_type == "clip" || *model_type == "siglip") {
    subtype = *model_type == "clip" ? VisionSubtype::kClip : VisionSubtype::kSiglip;
    auto it = root->find("vision_config");
    if (it == root->end() || !it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": missing object field \"vision_config\""));
    }
    j = &*it;
    where = path + " vision_config";
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field \"model_type\": \"", *model_type,
                                                   "\" is not a supported vision model (clip_vision_model, "
                                                   "siglip_vision_model, clip, siglip)"));
  }
  const HfVisionDefaults& d = subtype == VisionSubtype::kClip ? kClipDefaults : kSiglipDefaults;
  int hidden = 0, ffn = 0, layers = 0, heads = 0, image = 0, patch = 0, channels = 0;
  double eps = 0;
  for (absl::Status s : {GetJsonField<int>(*j, where, "hidden_size", &hidden, d.hidden_size),
                         GetJsonField<int>(*j, where, "intermediate_size", &ffn, d.intermediate_size),
                         GetJsonField<int>(*j, where, "num_hidden_layers", &layers, d.num_hidden_layers),
                         GetJsonField<int>(*j, where, "num_attention_heads", &heads, d.num_attention_heads),
                         GetJsonField<int>(*j, where, "image_size", &image, d.image_size),
                         GetJsonField<int>(*j, where, "patch_size", &patch, d.patch_size),
                         GetJsonField<int>(*j, where, "num_channels", &channels, 3),
                         GetJsonField<double>(*j, where, "layer_norm_eps", &eps, d.layer_norm_eps)}) {
    if (!s.ok()) return s;
  }
  if (channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field \"num_channels\" must be 3, got ", channels));
  }
  if (heads <= 0 || hidden % heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field \"num_attention_heads\" (", heads,
                                                   ") must divide hidden_size ", hidden));
  }
  absl::StatusOr<std::string> act = GetJsonString(*j, where, "hidden_act", std::string(d.hidden_act));
  if (!act.ok()) return act.status();
  transformer::Activation activation;
  if (*act == "quick_gelu") {
    activation = transformer::Activation::kQuickGelu;
  } else if (*act == "gelu_pytorch_tanh" || *act == "gelu_new" || *act == "gelu_fast") {
    activation = transformer::Activation::kGeluTanh;
  } else if (*act == "gelu") {
    activation = transformer::Activation::kGelu;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field \"hidden_act\": \"", *act,
                                                   "\" is not supported (quick_gelu, gelu_pytorch_tanh, gelu)"));
  }
  info.config = vision::MakeVisionConfig(subtype, layers, hidden, heads, ffn, activation, eps, patch, image, image);
  if (absl::Status s = info.config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
  }
  return info;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ConvertHfVisionStateDict(
    const std::map<std::string, at::Tensor>& hf_in, const VisionConfig& c, std::map<std::string, at::Tensor>* extras) {
  const bool clip = c.model_subtype == VisionSubtype::kClip;
  std::map<std::string, at::Tensor> hf;
  for (const auto& [name, tensor] : hf_in) {
    absl::string_view n = name;
    if (IsOtherTower(n)) continue;
    absl::ConsumePrefix(&n, kPrefix);
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
  if (at::Tensor cls = take("embeddings.class_embedding"); cls.defined()) {
    put("class_token", cls.reshape({1, 1, -1}));
  }
  put("conv1.weight", take("embeddings.patch_embedding.weight"));
  put("conv1.bias", take("embeddings.patch_embedding.bias"));
  put("position_embeddings.weight", take("embeddings.position_embedding.weight"));
  take("embeddings.position_ids");  // a buffer in older exports
  put("ln_pre.weight", take("pre_layrnorm.weight"));
  put("ln_pre.bias", take("pre_layrnorm.bias"));
  if (!clip) {
    put("ln_post.weight", take("post_layernorm.weight"));
    put("ln_post.bias", take("post_layernorm.bias"));
  }
  const int heads = c.transformer.num_attention_heads;
  for (int i = 0; i < c.transformer.num_layers; ++i) {
    const std::string h = absl::StrCat("encoder.layers.", i, ".");
    const std::string m = absl::StrCat("decoder.layers.", i, ".");
    for (const char* kind : {"weight", "bias"}) {
      put(m + "input_layernorm." + kind, take(h + "layer_norm1." + kind));
      put(m + "pre_mlp_layernorm." + kind, take(h + "layer_norm2." + kind));
      at::Tensor q = take(h + "self_attn.q_proj." + kind), k = take(h + "self_attn.k_proj." + kind),
                 v = take(h + "self_attn.v_proj." + kind);
      if (q.defined() && k.defined() && v.defined()) {
        put(m + "self_attention.linear_qkv." + kind, GroupQkv(q, k, v, heads));
      } else if (q.defined() || k.defined() || v.defined()) {
        return absl::InvalidArgumentError(absl::StrCat(h, "self_attn: q_proj, k_proj and v_proj ", kind,
                                                       " must all be present"));
      }
      put(m + "self_attention.linear_proj." + kind, take(h + "self_attn.out_proj." + kind));
      put(m + "mlp.linear_fc1." + kind, take(h + "mlp.fc1." + kind));
      put(m + "mlp.linear_fc2." + kind, take(h + "mlp.fc2." + kind));
    }
  }
  std::vector<std::string> unknown;
  for (const auto& [name, tensor] : hf) {
    if (used.count(name)) continue;
    const bool pooler_only = clip ? absl::StartsWith(name, "post_layernorm.") : absl::StartsWith(name, "head.");
    if (pooler_only) {
      if (extras != nullptr) (*extras)[name] = tensor;
    } else {
      unknown.push_back(name);
    }
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("HuggingFace ", VisionSubtypeName(c.model_subtype),
                                                   " vision checkpoint: unexpected tensors: ",
                                                   absl::StrJoin(unknown, ", ")));
  }
  return out;
}

absl::Status LoadHfVisionWeights(const std::string& dir, vision::CLIPViTModel& model,
                                 std::map<std::string, at::Tensor>* extras) {
  absl::StatusOr<std::map<std::string, at::Tensor>> tensors = ReadHfTensors(dir);
  if (!tensors.ok()) return tensors.status();
  for (auto& [name, t] : *tensors) t = t.to(at::kFloat);
  absl::StatusOr<std::map<std::string, at::Tensor>> converted =
      ConvertHfVisionStateDict(*tensors, model.config(), extras);
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", converted.status().message()));
  if (absl::Status s = model.LoadStateDict(*converted, transformer::LoadMode::kStrict); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<HfVisionModel> LoadHfVisionModel(const std::string& dir) {
  absl::StatusOr<HfVisionInfo> info = ReadHfVisionInfo(dir);
  if (!info.ok()) return info.status();
  absl::StatusOr<std::unique_ptr<vision::CLIPViTModel>> model = vision::CLIPViTModel::Create(info->config);
  if (!model.ok()) return model.status();
  HfVisionModel out;
  if (absl::Status s = LoadHfVisionWeights(dir, **model, &out.extras); !s.ok()) return s;
  out.model = std::move(*model);
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ExportHfVisionStateDict(
    const vision::CLIPViTModel& model, const std::map<std::string, at::Tensor>& extras) {
  const VisionConfig& c = model.config();
  const bool clip = c.model_subtype == VisionSubtype::kClip;
  if (clip && (!c.add_class_token || c.class_token_len != 1)) {
    return absl::InvalidArgumentError("HF CLIP export: CLIPVisionModel has exactly one class token");
  }
  if (!clip && c.add_class_token) {
    return absl::InvalidArgumentError("HF SigLIP export: SiglipVisionModel has no class token");
  }
  std::map<std::string, at::Tensor> m = model.StateDict();
  std::map<std::string, at::Tensor> out;
  auto put = [&](const std::string& hf_name, const at::Tensor& t) { out[kPrefix + hf_name] = t.contiguous(); };
  auto take = [&](const std::string& name) { return m.at(name); };
  if (clip) put("embeddings.class_embedding", take("class_token").reshape({-1}));
  put("embeddings.patch_embedding.weight", take("conv1.weight"));
  if (!clip) put("embeddings.patch_embedding.bias", take("conv1.bias"));
  put("embeddings.position_embedding.weight", take("position_embeddings.weight"));
  const int64_t h = c.transformer.hidden_size;
  if (clip) {
    put("pre_layrnorm.weight", take("ln_pre.weight"));
    put("pre_layrnorm.bias", take("ln_pre.bias"));
    auto w = extras.find("post_layernorm.weight"), b = extras.find("post_layernorm.bias");
    put("post_layernorm.weight", w != extras.end() ? w->second : at::ones({h}));
    put("post_layernorm.bias", b != extras.end() ? b->second : at::zeros({h}));
  } else {
    put("post_layernorm.weight", take("ln_post.weight"));
    put("post_layernorm.bias", take("ln_post.bias"));
    for (const auto& [name, t] : extras) {
      if (absl::StartsWith(name, "head.")) put(name, t);
    }
  }
  const int heads = c.transformer.num_attention_heads;
  for (int i = 0; i < c.transformer.num_layers; ++i) {
    const std::string hf = absl::StrCat("encoder.layers.", i, ".");
    const std::string l = absl::StrCat("decoder.layers.", i, ".");
    for (const std::string kind : {"weight", "bias"}) {
      put(hf + "layer_norm1." + kind, take(l + "input_layernorm." + kind));
      put(hf + "layer_norm2." + kind, take(l + "pre_mlp_layernorm." + kind));
      QkvParts qkv = UngroupQkv(take(l + "self_attention.linear_qkv." + kind), heads, heads);
      put(hf + "self_attn.q_proj." + kind, qkv.q);
      put(hf + "self_attn.k_proj." + kind, qkv.k);
      put(hf + "self_attn.v_proj." + kind, qkv.v);
      put(hf + "self_attn.out_proj." + kind, take(l + "self_attention.linear_proj." + kind));
      put(hf + "mlp.fc1." + kind, take(l + "mlp.linear_fc1." + kind));
      put(hf + "mlp.fc2." + kind, take(l + "mlp.linear_fc2." + kind));
    }
  }
  return out;
}

absl::Status SaveHfVisionModel(const vision::CLIPViTModel& model, const std::string& dir,
                               const std::map<std::string, at::Tensor>& extras) {
  const VisionConfig& c = model.config();
  if (c.img_h != c.img_w) {
    return absl::InvalidArgumentError(absl::StrCat("HF vision export: image ", c.img_h, "x", c.img_w,
                                                   " is not square (HF configs have one image_size)"));
  }
  absl::StatusOr<std::map<std::string, at::Tensor>> tensors = ExportHfVisionStateDict(model, extras);
  if (!tensors.ok()) return tensors.status();
  const bool clip = c.model_subtype == VisionSubtype::kClip;
  const transformer::TransformerConfig& t = c.transformer;
  std::string act;
  switch (t.activation) {
    case transformer::Activation::kQuickGelu: act = "quick_gelu"; break;
    case transformer::Activation::kGeluTanh: act = "gelu_pytorch_tanh"; break;
    case transformer::Activation::kGelu: act = "gelu"; break;
    default: return absl::InvalidArgumentError("HF vision export: activation must be quick GeLU, tanh GeLU or GeLU");
  }
  if (t.kv_channels * t.num_attention_heads != t.hidden_size) {
    return absl::InvalidArgumentError("HF vision export: HF needs kv_channels * heads == hidden_size");
  }
  nlohmann::json config = {
      {"architectures", {clip ? "CLIPVisionModel" : "SiglipVisionModel"}},
      {"model_type", clip ? "clip_vision_model" : "siglip_vision_model"},
      {"hidden_size", t.hidden_size},
      {"intermediate_size", t.ffn_hidden_size},
      {"num_hidden_layers", t.num_layers},
      {"num_attention_heads", t.num_attention_heads},
      {"num_channels", 3},
      {"image_size", c.img_h},
      {"patch_size", c.patch_dim},
      {"hidden_act", act},
      {"layer_norm_eps", t.layernorm_epsilon},
      {"attention_dropout", 0.0},
      {"dtype", "float32"},
  };
  if (!clip) {
    bool head = false;
    for (const auto& [name, tensor] : *tensors) head = head || absl::StartsWith(name, "vision_model.head.");
    config["vision_use_head"] = head;
  }
  return WriteHfDirectory(dir, config, *tensors);
}

}  // namespace megatron::models::huggingface
