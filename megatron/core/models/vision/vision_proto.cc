#include "megatron/core/models/vision/vision_proto.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "megatron/core/proto/multimodal.pb.h"
#include "megatron/core/proto/recipe.pb.h"

namespace megatron::models::vision {
namespace {

transformer::Activation ToActivation(proto::Activation a) {
  switch (a) {
    case proto::GELU: return transformer::Activation::kGelu;
    case proto::GELU_TANH: return transformer::Activation::kGeluTanh;
    case proto::SWIGLU: return transformer::Activation::kSwiGLU;
    case proto::RELU: return transformer::Activation::kRelu;
    case proto::QUICK_GELU: return transformer::Activation::kQuickGelu;
  }
  return transformer::Activation::kGelu;
}

// Re-roots an error "model.x: ..." (transformer::FromProto) as "language_model.x: ...".
absl::Status Reroot(const absl::Status& s, absl::string_view from, absl::string_view to) {
  absl::string_view m = s.message();
  if (absl::ConsumePrefix(&m, from)) return absl::Status(s.code(), absl::StrCat(to, m));
  return s;
}

}  // namespace

absl::Status VisionConfigFromProto(const proto::VisionModelConfig& p, VisionConfig* out) {
  const bool clip = p.model_subtype() == proto::CLIP;
  const VisionSubtype subtype = clip ? VisionSubtype::kClip : VisionSubtype::kSiglip;
  const transformer::Activation activation =
      p.has_activation() ? ToActivation(p.activation())
                         : (clip ? transformer::Activation::kQuickGelu : transformer::Activation::kGeluTanh);
  const double eps = p.has_layernorm_epsilon() ? p.layernorm_epsilon() : (clip ? 1e-5 : 1e-6);
  if (p.num_attention_heads() <= 0 || p.hidden_size() % p.num_attention_heads() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("vision_model.num_attention_heads: ", p.num_attention_heads(),
                                                   " heads must divide hidden_size ", p.hidden_size()));
  }
  VisionConfig c = MakeVisionConfig(subtype, p.num_layers(), p.hidden_size(), p.num_attention_heads(),
                                    p.ffn_hidden_size(), activation, eps, p.patch_dim(), p.img_h(), p.img_w());
  if (p.has_add_class_token()) c.add_class_token = p.add_class_token();
  c.class_token_len = p.has_class_token_len() ? p.class_token_len() : (c.add_class_token ? 1 : 0);
  c.transformer.init_method_std = p.init_method_std();
  c.transformer.backend = p.backend() == proto::FUSED ? transformer::Backend::kFused : transformer::Backend::kLocal;
  c.transformer.max_position_embeddings = c.seq_length();
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  *out = c;
  return absl::OkStatus();
}

absl::Status ProjectorConfigFromProto(const proto::ProjectorConfig& p, int input_size, int hidden_size,
                                      ProjectorConfig* out) {
  ProjectorConfig c;
  c.projector_type = p.projector_type() == proto::AFFINE ? ProjectorType::kAffine : ProjectorType::kMlp;
  c.input_size = input_size;
  c.hidden_size = hidden_size;
  c.ffn_hidden_size = p.ffn_hidden_size() > 0 ? p.ffn_hidden_size() : hidden_size;
  c.activation = ToActivation(p.activation());
  c.add_bias_linear = p.add_bias_linear();
  c.layernorm = p.layernorm();
  c.layernorm_epsilon = p.layernorm_epsilon();
  c.init_method_std = p.init_method_std();
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  *out = c;
  return absl::OkStatus();
}

absl::Status LlavaConfigsFromProto(const proto::LlavaModelConfig& p, int tokenizer_vocab_size, LlavaConfigs* out) {
  LlavaConfigs c;
  if (absl::Status s = transformer::FromProto(p.language_model(), tokenizer_vocab_size, &c.language);
      !s.ok()) {
    return Reroot(s, "model.", "language_model.");
  }
  if (absl::Status s = VisionConfigFromProto(p.vision_model(), &c.vision); !s.ok()) return s;
  c.drop_vision_class_token = p.drop_vision_class_token();
  c.pixel_shuffle = p.pixel_shuffle();
  c.image_token_index = p.image_token_index();
  const VisionConfig& v = c.vision;
  if (v.model_subtype == VisionSubtype::kSiglip && c.drop_vision_class_token) {
    return absl::InvalidArgumentError(
        "drop_vision_class_token: SigLIP has no class token; set it to false (Megatron asserts the same)");
  }
  const bool keeps_class_token = v.add_class_token && !c.drop_vision_class_token;
  if (c.pixel_shuffle) {
    const int gh = v.img_h / v.patch_dim, gw = v.img_w / v.patch_dim;
    if (gh != gw || gh % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("pixel_shuffle: needs an even square patch grid, got ", gh, "x",
                                                     gw, " (vision_model.img_h/img_w/patch_dim)"));
    }
    if (keeps_class_token) {
      return absl::InvalidArgumentError("pixel_shuffle: set drop_vision_class_token (the class token is not part "
                                        "of the patch grid)");
    }
  }
  ImageEmbeddingOptions o;
  o.img_h = v.img_h;
  o.img_w = v.img_w;
  o.patch_dim = v.patch_dim;
  o.vision_model_type = VisionSubtypeName(v.model_subtype);
  o.disable_vision_class_token = !keeps_class_token;
  o.class_token_len = v.class_token_len;
  o.pixel_shuffle = c.pixel_shuffle;
  absl::StatusOr<int> n = GetNumImageEmbeddings(o);
  if (!n.ok()) return n.status();
  c.img_seq_len = *n;
  if (c.img_seq_len >= c.language.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("language_model.max_position_embeddings: ",
                                                   c.language.max_position_embeddings,
                                                   " leaves no room for text after one image tile of ",
                                                   c.img_seq_len, " embeddings"));
  }
  const int input_size = v.transformer.hidden_size * (c.pixel_shuffle ? 4 : 1);
  if (absl::Status s = ProjectorConfigFromProto(p.projector(), input_size, c.language.hidden_size,
                                                &c.projector);
      !s.ok()) {
    return s;
  }
  *out = c;
  return absl::OkStatus();
}

int64_t GptParameterCount(const transformer::TransformerConfig& c) {
  const int64_t h = c.hidden_size, vocab = c.vocab_size;
  int64_t n = vocab * h;
  if (c.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute) {
    n += int64_t{c.max_position_embeddings} * h;
  }
  n += TransformerBlockParameterCount(c);
  if (!c.share_embeddings_and_output_weights) n += vocab * h;
  return n;
}

LlavaParameterCounts CountLlavaParameters(const LlavaConfigs& c) {
  return {GptParameterCount(c.language), VisionParameterCount(c.vision),
          ProjectorParameterCount(c.projector)};
}

}  // namespace megatron::models::vision
