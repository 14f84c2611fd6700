#include "megatron/core/transformer/transformer_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "megatron/core/proto/recipe.pb.h"

namespace megatron::transformer {
namespace {

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("model.", field, ": ", what));
}

}  // namespace

int PadVocabSize(int vocab_size, int divisible_by) {
  if (divisible_by <= 1) return vocab_size;
  return (vocab_size + divisible_by - 1) / divisible_by * divisible_by;
}

double TransformerConfig::output_layer_init_std() const {
  return use_scaled_init_for_output_layers ? init_method_std / std::sqrt(2.0 * num_layers) : init_method_std;
}

double TransformerConfig::attention_scale() const {
  return softmax_scale > 0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(kv_channels));
}

absl::Status TransformerConfig::Validate() const {
  if (num_layers <= 0) return FieldError("num_layers", absl::StrCat("must be positive, got ", num_layers));
  if (hidden_size <= 0) return FieldError("hidden_size", absl::StrCat("must be positive, got ", hidden_size));
  if (num_attention_heads <= 0) {
    return FieldError("num_attention_heads", absl::StrCat("must be positive, got ", num_attention_heads));
  }
  if (num_query_groups <= 0 || num_attention_heads % num_query_groups != 0) {
    return FieldError("num_query_groups",
                      absl::StrFormat("%d query groups must divide %d attention heads", num_query_groups,
                                      num_attention_heads));
  }
  if (kv_channels <= 0) return FieldError("kv_channels", absl::StrCat("must be positive, got ", kv_channels));
  if (position_embedding_type == PositionEmbedding::kRope && kv_channels % 2 != 0) {
    return FieldError("kv_channels", absl::StrCat("rotary embeddings need an even head dimension, got ",
                                                  kv_channels));
  }
  if (ffn_hidden_size <= 0) {
    return FieldError("ffn_hidden_size", absl::StrCat("must be positive, got ", ffn_hidden_size));
  }
  if (vocab_size <= 0) return FieldError("vocab_size", absl::StrCat("must be positive, got ", vocab_size));
  if (max_position_embeddings <= 0) {
    return FieldError("max_position_embeddings", absl::StrCat("must be positive, got ", max_position_embeddings));
  }
  if (hidden_dropout < 0 || hidden_dropout >= 1) {
    return FieldError("hidden_dropout", absl::StrCat("must be in [0, 1), got ", hidden_dropout));
  }
  if (attention_dropout < 0 || attention_dropout >= 1) {
    return FieldError("attention_dropout", absl::StrCat("must be in [0, 1), got ", attention_dropout));
  }
  if (init_method_std <= 0) {
    return FieldError("init_method_std", absl::StrCat("must be positive, got ", init_method_std));
  }
  if (softmax_scale < 0) {
    return FieldError("softmax_scale", absl::StrCat("must be positive (or 0 for 1/sqrt(kv_channels)), got ",
                                                    softmax_scale));
  }
  if (layernorm_epsilon <= 0) {
    return FieldError("layernorm_epsilon", absl::StrCat("must be positive, got ", layernorm_epsilon));
  }
  return absl::OkStatus();
}

std::string TransformerConfig::DebugString() const {
  static const char* kNorm[] = {"LayerNorm", "RMSNorm"};
  static const char* kAct[] = {"gelu", "gelu_tanh", "swiglu", "relu", "quick_gelu"};  // Activation order
  static const char* kPos[] = {"learned_absolute", "rope", "none", "relative"};
  return absl::StrFormat(
      "layers=%d hidden=%d heads=%d groups=%d kv_channels=%d ffn=%d vocab=%d norm=%s act=%s pos=%s tied=%d "
      "bias=%d/%d dropout=%.3g/%.3g backend=%s",
      num_layers, hidden_size, num_attention_heads, num_query_groups, kv_channels, ffn_hidden_size, vocab_size,
      kNorm[static_cast<int>(normalization)], kAct[static_cast<int>(activation)],
      kPos[static_cast<int>(position_embedding_type)], share_embeddings_and_output_weights, add_bias_linear,
      add_qkv_bias, hidden_dropout, attention_dropout, backend == Backend::kLocal ? "local" : "fused");
}

absl::Status FromProto(const proto::ModelConfig& m, int tokenizer_vocab_size, TransformerConfig* out) {
  TransformerConfig c;
  c.num_layers = m.num_layers();
  c.hidden_size = m.hidden_size();
  c.num_attention_heads = m.num_attention_heads();
  c.num_query_groups = m.num_query_groups() > 0 ? m.num_query_groups() : m.num_attention_heads();
  c.ffn_hidden_size = m.ffn_hidden_size() > 0 ? m.ffn_hidden_size() : 4 * m.hidden_size();
  if (m.kv_channels() > 0) {
    c.kv_channels = m.kv_channels();
  } else {
    if (m.num_attention_heads() <= 0 || m.hidden_size() % m.num_attention_heads() != 0) {
      return FieldError("num_attention_heads",
                        absl::StrFormat("%d heads must divide hidden_size %d (or set model.kv_channels)",
                                        m.num_attention_heads(), m.hidden_size()));
    }
    c.kv_channels = m.hidden_size() / m.num_attention_heads();
  }
  c.normalization = m.normalization() == proto::RMSNORM ? Normalization::kRMSNorm : Normalization::kLayerNorm;
  c.layernorm_epsilon = m.layernorm_epsilon();
  switch (m.activation()) {
    case proto::GELU: c.activation = Activation::kGelu; break;
    case proto::GELU_TANH: c.activation = Activation::kGeluTanh; break;
    case proto::SWIGLU: c.activation = Activation::kSwiGLU; break;
    case proto::RELU: c.activation = Activation::kRelu; break;
    case proto::QUICK_GELU: c.activation = Activation::kQuickGelu; break;
  }
  switch (m.position_embedding_type()) {
    case proto::LEARNED_ABSOLUTE: c.position_embedding_type = PositionEmbedding::kLearnedAbsolute; break;
    case proto::ROPE: c.position_embedding_type = PositionEmbedding::kRope; break;
    case proto::NO_POSITION: c.position_embedding_type = PositionEmbedding::kNone; break;
  }
  c.rotary_base = m.rotary_base();
  c.share_embeddings_and_output_weights = m.share_embeddings_and_output_weights();
  c.hidden_dropout = m.hidden_dropout();
  c.attention_dropout = m.attention_dropout();
  c.init_method_std = m.init_method_std();
  c.use_scaled_init_for_output_layers = m.use_scaled_init_for_output_layers();
  c.add_bias_linear = m.add_bias_linear();
  c.add_qkv_bias = m.add_qkv_bias();
  c.max_position_embeddings = m.max_position_embeddings();
  if (m.vocab_size() > 0) {
    if (m.vocab_size() < tokenizer_vocab_size) {
      return FieldError("vocab_size", absl::StrFormat("%d is smaller than the tokenizer's %d ids", m.vocab_size(),
                                                      tokenizer_vocab_size));
    }
    c.vocab_size = m.vocab_size();
  } else {
    c.vocab_size = PadVocabSize(tokenizer_vocab_size, m.make_vocab_size_divisible_by());
  }
  c.backend = m.backend() == proto::FUSED ? Backend::kFused : Backend::kLocal;
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  *out = c;
  return absl::OkStatus();
}

}  // namespace megatron::transformer
