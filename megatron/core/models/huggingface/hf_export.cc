#include "megatron/core/models/huggingface/hf_export.h"

#include <ATen/ops/cat.h>

#include "absl/strings/str_cat.h"
#include "megatron/core/models/huggingface/hf_common.h"

namespace megatron::models::huggingface {
namespace {

using transformer::Activation;
using transformer::Normalization;
using transformer::PositionEmbedding;
using transformer::TransformerConfig;

absl::Status Unsupported(const std::string& model_type, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("HF ", model_type, " export: ", what));
}

bool IsLlamaFamily(const std::string& t) { return t == "llama" || t == "mistral" || t == "qwen2"; }

}  // namespace

absl::StatusOr<nlohmann::json> HfLanguageModelConfig(const TransformerConfig& c, const std::string& model_type) {
  if (model_type == "gpt2") {
    if (c.normalization != Normalization::kLayerNorm) return Unsupported(model_type, "needs LayerNorm");
    if (c.position_embedding_type != PositionEmbedding::kLearnedAbsolute) {
      return Unsupported(model_type, "needs learned absolute positions");
    }
    if (!c.share_embeddings_and_output_weights) return Unsupported(model_type, "needs tied embeddings");
    if (!c.add_bias_linear || !c.add_qkv_bias) return Unsupported(model_type, "needs biases on every linear layer");
    if (c.num_query_groups != c.num_attention_heads) return Unsupported(model_type, "has no grouped-query attention");
    if (c.kv_channels * c.num_attention_heads != c.hidden_size) {
      return Unsupported(model_type, "needs kv_channels * heads == hidden_size");
    }
    std::string act;
    switch (c.activation) {
      case Activation::kGeluTanh: act = "gelu_new"; break;
      case Activation::kGelu: act = "gelu"; break;
      case Activation::kRelu: act = "relu"; break;
      default: return Unsupported(model_type, "activation must be GeLU (tanh or exact) or ReLU");
    }
    return nlohmann::json{
        {"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"},
        {"n_embd", c.hidden_size}, {"n_layer", c.num_layers}, {"n_head", c.num_attention_heads},
        {"n_inner", c.ffn_hidden_size}, {"n_positions", c.max_position_embeddings}, {"vocab_size", c.vocab_size},
        {"layer_norm_epsilon", c.layernorm_epsilon}, {"activation_function", act},
        {"initializer_range", c.init_method_std}, {"resid_pdrop", 0.0}, {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0},
        {"tie_word_embeddings", true}, {"dtype", "float32"}};
  }
  if (!IsLlamaFamily(model_type)) {
    return absl::InvalidArgumentError(absl::StrCat("HF export: model_type \"", model_type,
                                                   "\" is not supported (gpt2, llama, mistral, qwen2)"));
  }
  if (c.normalization != Normalization::kRMSNorm) return Unsupported(model_type, "needs RMSNorm");
  if (c.position_embedding_type != PositionEmbedding::kRope) return Unsupported(model_type, "needs RoPE");
  if (c.activation != Activation::kSwiGLU) return Unsupported(model_type, "needs SwiGLU");
  nlohmann::json j = {
      {"model_type", model_type}, {"hidden_size", c.hidden_size}, {"intermediate_size", c.ffn_hidden_size},
      {"num_hidden_layers", c.num_layers}, {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_query_groups}, {"head_dim", c.kv_channels},
      {"max_position_embeddings", c.max_position_embeddings}, {"vocab_size", c.vocab_size},
      {"rms_norm_eps", c.layernorm_epsilon}, {"hidden_act", "silu"}, {"initializer_range", c.init_method_std},
      {"tie_word_embeddings", c.share_embeddings_and_output_weights}, {"attention_dropout", 0.0},
      // transformers < 5 reads rope_theta, transformers 5 rope_parameters; both are written.
      {"rope_theta", c.rotary_base},
      {"rope_parameters", {{"rope_theta", c.rotary_base}, {"rope_type", "default"}}},
      {"dtype", "float32"}};
  if (model_type == "qwen2") {
    if (c.add_bias_linear) return Unsupported(model_type, "has biases on q/k/v only (add_bias_linear must be off)");
    if (!c.add_qkv_bias) return Unsupported(model_type, "always has q/k/v biases (add_qkv_bias must be on)");
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["use_sliding_window"] = false;
  } else {
    if (c.add_bias_linear != c.add_qkv_bias) {
      return Unsupported(model_type, "attention and MLP biases must agree (add_bias_linear == add_qkv_bias)");
    }
    if (model_type == "mistral" && c.add_bias_linear) return Unsupported(model_type, "has no biases");
    j["architectures"] = {model_type == "llama" ? "LlamaForCausalLM" : "MistralForCausalLM"};
    if (model_type == "llama") {
      j["attention_bias"] = c.add_qkv_bias;
      j["mlp_bias"] = c.add_bias_linear;
    } else {
      j["sliding_window"] = nullptr;
    }
  }
  return j;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ExportHfStateDict(const std::map<std::string, at::Tensor>& state,
                                                                   const TransformerConfig& c,
                                                                   const std::string& model_type) {
  absl::StatusOr<nlohmann::json> check = HfLanguageModelConfig(c, model_type);
  if (!check.ok()) return check.status();
  std::map<std::string, at::Tensor> out;
  absl::Status missing;
  auto take = [&](const std::string& name) -> at::Tensor {
    auto it = state.find(name);
    if (it == state.end()) {
      if (missing.ok()) missing = absl::InvalidArgumentError(absl::StrCat("HF export: missing tensor ", name));
      return at::Tensor();
    }
    return it->second;
  };
  auto put = [&](const std::string& name, const at::Tensor& t) {
    if (t.defined()) out[name] = t.contiguous();
  };
  const int np = c.num_attention_heads, ng = c.num_query_groups;
  if (model_type == "gpt2") {
    const std::string p = "transformer.";
    put(p + "wte.weight", take("embedding.word_embeddings.weight"));
    put(p + "wpe.weight", take("embedding.position_embeddings.weight"));
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string h = absl::StrCat(p, "h.", i, ".");
      const std::string m = absl::StrCat("decoder.layers.", i, ".");
      put(h + "ln_1.weight", take(m + "input_layernorm.weight"));
      put(h + "ln_1.bias", take(m + "input_layernorm.bias"));
      put(h + "ln_2.weight", take(m + "pre_mlp_layernorm.weight"));
      put(h + "ln_2.bias", take(m + "pre_mlp_layernorm.bias"));
      if (!missing.ok()) return missing;
      // Conv1D stores [in, out]; c_attn's out is [q; k; v].
      QkvParts w = UngroupQkv(take(m + "self_attention.linear_qkv.weight"), np, ng);
      QkvParts b = UngroupQkv(take(m + "self_attention.linear_qkv.bias"), np, ng);
      put(h + "attn.c_attn.weight", at::cat({w.q, w.k, w.v}, 0).t());
      put(h + "attn.c_attn.bias", at::cat({b.q, b.k, b.v}, 0));
      put(h + "attn.c_proj.weight", take(m + "self_attention.linear_proj.weight").t());
      put(h + "attn.c_proj.bias", take(m + "self_attention.linear_proj.bias"));
      put(h + "mlp.c_fc.weight", take(m + "mlp.linear_fc1.weight").t());
      put(h + "mlp.c_fc.bias", take(m + "mlp.linear_fc1.bias"));
      put(h + "mlp.c_proj.weight", take(m + "mlp.linear_fc2.weight").t());
      put(h + "mlp.c_proj.bias", take(m + "mlp.linear_fc2.bias"));
    }
    put(p + "ln_f.weight", take("decoder.final_layernorm.weight"));
    put(p + "ln_f.bias", take("decoder.final_layernorm.bias"));
  } else {
    put("model.embed_tokens.weight", take("embedding.word_embeddings.weight"));
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string h = absl::StrCat("model.layers.", i, ".");
      const std::string m = absl::StrCat("decoder.layers.", i, ".");
      put(h + "input_layernorm.weight", take(m + "input_layernorm.weight"));
      put(h + "post_attention_layernorm.weight", take(m + "pre_mlp_layernorm.weight"));
      for (const std::string kind : {"weight", "bias"}) {
        const bool qkv_present = kind == "weight" || c.add_qkv_bias;
        const bool linear_present = kind == "weight" || c.add_bias_linear;
        if (qkv_present) {
          at::Tensor qkv = take(m + "self_attention.linear_qkv." + kind);
          if (!missing.ok()) return missing;
          QkvParts parts = UngroupQkv(qkv, np, ng);
          put(h + "self_attn.q_proj." + kind, parts.q);
          put(h + "self_attn.k_proj." + kind, parts.k);
          put(h + "self_attn.v_proj." + kind, parts.v);
        }
        if (linear_present) {
          put(h + "self_attn.o_proj." + kind, take(m + "self_attention.linear_proj." + kind));
          at::Tensor fc1 = take(m + "mlp.linear_fc1." + kind);
          if (!missing.ok()) return missing;
          auto gate_up = fc1.chunk(2, 0);
          put(h + "mlp.gate_proj." + kind, gate_up[0]);
          put(h + "mlp.up_proj." + kind, gate_up[1]);
          put(h + "mlp.down_proj." + kind, take(m + "mlp.linear_fc2." + kind));
        }
      }
    }
    put("model.norm.weight", take("decoder.final_layernorm.weight"));
    if (!c.share_embeddings_and_output_weights) put("lm_head.weight", take("output_layer.weight"));
  }
  if (!missing.ok()) return missing;
  return out;
}

absl::Status SaveHfLanguageModel(const GPTModel& model, const std::string& model_type, const std::string& dir) {
  TORCH_CHECK(model.parallel().tp_size() == 1, "SaveHfLanguageModel: gather tensor-parallel shards first");
  absl::StatusOr<nlohmann::json> config = HfLanguageModelConfig(model.config(), model_type);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::map<std::string, at::Tensor>> tensors =
      ExportHfStateDict(model.StateDict(), model.config(), model_type);
  if (!tensors.ok()) return tensors.status();
  return WriteHfDirectory(dir, *config, *tensors);
}

}  // namespace megatron::models::huggingface
