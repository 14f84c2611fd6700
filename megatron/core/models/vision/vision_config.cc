#include "megatron/core/models/vision/vision_config.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace megatron::models::vision {
namespace {

using transformer::TransformerConfig;

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("vision_model.", field, ": ", what));
}

}  // namespace

const char* VisionSubtypeName(VisionSubtype subtype) {
  return subtype == VisionSubtype::kClip ? "clip" : "siglip";
}

absl::Status VisionConfig::Validate() const {
  if (patch_dim <= 0) return FieldError("patch_dim", absl::StrCat("must be positive, got ", patch_dim));
  // Megatron asserts whole patches. SigLIP's conv uses "valid" padding, and its published so400m/14 checkpoint
  // runs at 384 px (27 patches, the last 6 pixels unused), so SigLIP only needs one whole patch.
  const bool exact = model_subtype == VisionSubtype::kClip;
  if (img_h < patch_dim || (exact && img_h % patch_dim != 0)) {
    return FieldError("img_h", absl::StrCat(img_h, " is not a positive multiple of patch_dim ", patch_dim));
  }
  if (img_w < patch_dim || (exact && img_w % patch_dim != 0)) {
    return FieldError("img_w", absl::StrCat(img_w, " is not a positive multiple of patch_dim ", patch_dim));
  }
  if (add_class_token && class_token_len <= 0) {
    return FieldError("class_token_len", absl::StrCat("must be positive with add_class_token, got ",
                                                      class_token_len));
  }
  if (transformer.attn_mask_type != transformer::AttnMask::kNone) {
    return FieldError("attn_mask_type", "a vision encoder attends without a mask (use AttnMask::kNone)");
  }
  if (transformer.normalization != transformer::Normalization::kLayerNorm) {
    return FieldError("normalization", "CLIP and SigLIP use LayerNorm");
  }
  // The stack's own checks; the language-model fields it also checks are unused by a vision encoder.
  TransformerConfig stack = transformer;
  stack.vocab_size = 1;
  stack.max_position_embeddings = seq_length();
  if (absl::Status s = stack.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("vision_", s.message()));  // "vision_model.<field>: ..."
  }
  return absl::OkStatus();
}

VisionConfig MakeVisionConfig(VisionSubtype subtype, int num_layers, int hidden_size, int num_attention_heads,
                              int ffn_hidden_size, transformer::Activation activation, double layernorm_epsilon,
                              int patch_dim, int img_h, int img_w) {
  VisionConfig v;
  v.model_subtype = subtype;
  v.patch_dim = patch_dim;
  v.img_h = img_h;
  v.img_w = img_w;
  v.add_class_token = subtype == VisionSubtype::kClip;
  v.class_token_len = subtype == VisionSubtype::kClip ? 1 : 0;
  TransformerConfig& t = v.transformer;
  t.num_layers = num_layers;
  t.hidden_size = hidden_size;
  t.num_attention_heads = num_attention_heads;
  t.num_query_groups = num_attention_heads;
  t.kv_channels = num_attention_heads > 0 ? hidden_size / num_attention_heads : 0;
  t.ffn_hidden_size = ffn_hidden_size;
  t.activation = activation;
  t.normalization = transformer::Normalization::kLayerNorm;
  t.layernorm_epsilon = layernorm_epsilon;
  t.add_bias_linear = true;
  t.add_qkv_bias = true;
  t.hidden_dropout = 0.0;
  t.attention_dropout = 0.0;
  // Positions are added by the encoder's learned table before the stack, not inside it.
  t.position_embedding_type = transformer::PositionEmbedding::kNone;
  t.attn_mask_type = transformer::AttnMask::kNone;
  t.final_layernorm = false;
  t.share_embeddings_and_output_weights = false;
  t.vocab_size = 1;  // unused
  t.max_position_embeddings = v.seq_length();
  return v;
}

VisionConfig ClipVitL14Config(int img_size) {
  return MakeVisionConfig(VisionSubtype::kClip, 24, 1024, 16, 4096, transformer::Activation::kQuickGelu, 1e-5,
                          14, img_size, img_size);
}

VisionConfig SiglipSo400mConfig(int img_size) {
  return MakeVisionConfig(VisionSubtype::kSiglip, 27, 1152, 16, 4304, transformer::Activation::kGeluTanh, 1e-6,
                          14, img_size, img_size);
}

absl::StatusOr<int> GetNumImageEmbeddings(const ImageEmbeddingOptions& o) {
  if (o.patch_dim <= 0) return absl::InvalidArgumentError(absl::StrCat("patch_dim must be positive, got ", o.patch_dim));
  const std::string& type = o.vision_model_type;
  bool keep_class_token;
  int class_token_len = o.class_token_len;
  if (type == "siglip" || absl::StartsWith(type, "hf://")) {
    keep_class_token = false;  // SigLIP has no class token; hf:// encoders are SigLIP
  } else if (type == "clip" || type == "internvit" || type == "internvit300M" || type == "radio" ||
             type == "radio-g") {
    keep_class_token = !o.disable_vision_class_token;
  } else if (type == "cradio-g") {
    keep_class_token = !o.disable_vision_class_token;
    class_token_len = 8;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("vision_model_type \"", type,
                                                   "\" is not supported (clip, siglip, internvit, internvit300M, "
                                                   "radio, radio-g, cradio-g, hf://...)"));
  }
  int n = (o.img_h / o.patch_dim) * (o.img_w / o.patch_dim) + (keep_class_token ? class_token_len : 0);
  if (o.pixel_shuffle) n = static_cast<int>(n * 0.25);
  if (o.use_tile_tags) {
    const std::string& t = o.tokenizer_type;
    if (t == "llama3p1" || t == "chatml" || t == "qwen2p0" || t == "qwen2p5") {
      n += 5;  // the tokenized "<tile_k>" tag
    } else if (absl::StartsWith(t, "nemotron5")) {
      n += 6;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tile tags are not defined for tokenizer_type \"", t,
                                                     "\" (llama3p1, chatml, qwen2p0, qwen2p5, nemotron5*)"));
    }
    if (absl::StartsWith(t, "qwen")) {
      if (o.max_num_tiles > 100) {
        return absl::InvalidArgumentError(absl::StrCat("max_num_tiles ", o.max_num_tiles,
                                                       " > 100 is not supported with tile tags"));
      }
      if (o.max_num_tiles > 10) n += 1;  // two-digit tile numbers tokenize to one more token
    }
  }
  return n;
}

int64_t TransformerBlockParameterCount(const TransformerConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t norm = c.normalization == transformer::Normalization::kLayerNorm ? 2 * h : h;
  const int64_t qkv = c.query_projection_size() + 2 * c.kv_projection_size();
  const int64_t fc1 = c.gated_linear_unit() ? 2 * int64_t{c.ffn_hidden_size} : c.ffn_hidden_size;
  int64_t layer = 2 * norm;
  layer += h * qkv + (c.add_qkv_bias ? qkv : 0);
  layer += int64_t{c.query_projection_size()} * h + (c.add_bias_linear ? h : 0);
  layer += h * fc1 + (c.add_bias_linear ? fc1 : 0);
  layer += fc1 / (c.gated_linear_unit() ? 2 : 1) * h + (c.add_bias_linear ? h : 0);
  return layer * c.num_layers + (c.final_layernorm ? norm : 0);
}

int64_t VisionParameterCount(const VisionConfig& c) {
  const int64_t h = c.transformer.hidden_size;
  int64_t n = h * 3 * c.patch_dim * c.patch_dim;            // conv1.weight
  if (c.model_subtype == VisionSubtype::kSiglip) n += h;     // conv1.bias
  if (c.add_class_token) n += int64_t{c.class_token_len} * h;  // class_token
  n += int64_t{c.seq_length()} * h;                          // position_embeddings.weight
  n += 2 * h;                                                // ln_pre (CLIP) or ln_post (SigLIP)
  return n + TransformerBlockParameterCount(c.transformer);
}

}  // namespace megatron::models::vision
