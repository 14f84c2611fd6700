// Every LLaVA preset parses, converts, and has the parameter counts of the published models it is made of,
// computed by shape arithmetic (no weights are allocated; the arithmetic equals the modules' own counts, checked
// here on small shapes). Published counts: experiments/llava/presets/published_counts.py (transformers on the
// meta device from each model's official config.json; they agree with the model cards).
#include <map>
#include <string>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/models/vision/multimodal_projector.h"
#include "megatron/core/models/vision/vision_proto.h"
#include "megatron/core/proto/multimodal.pb.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::models::vision {
namespace {

// HuggingFace parameter counts (published_counts.py; model cards in parentheses).
constexpr int64_t kMistral7Bv03 = 7'248'023'552;  // mistralai/Mistral-7B-v0.3 (7.25B)
constexpr int64_t kLlama3_8B = 8'030'261'248;     // meta-llama/Meta-Llama-3-8B (8.03B)
constexpr int64_t kQwen25_7B = 7'615'616'512;     // Qwen/Qwen2.5-7B (7.61B)
constexpr int64_t kQwen2_0p5B = 494'032'768;      // Qwen/Qwen2-0.5B (0.49B)
constexpr int64_t kClipL14_336 = 303'507'456;     // openai/clip-vit-large-patch14-336 vision tower
constexpr int64_t kClipPostLayernorm = 2 * 1024;  //   of which post_layernorm (pooler only; Megatron has none)
constexpr int64_t kSiglipSo400m384 = 428'225'600;  // google/siglip-so400m-patch14-384 vision tower
constexpr int64_t kSiglipHead = 15'238'352;        //   of which the attention-pooling head (Megatron drops it)

LlavaConfigs LoadPreset(const std::string& name) {
  const std::string path = "experiments/llava/presets/" + name + ".textproto";
  absl::StatusOr<std::string> text = utils::ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  proto::LlavaModelConfig p;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text.ok() ? *text : "", &p)) << path;
  LlavaConfigs c;
  absl::Status s = LlavaConfigsFromProto(p, /*tokenizer_vocab_size=*/0, &c);
  EXPECT_TRUE(s.ok()) << path << ": " << s;
  return c;
}

TEST(Presets, MistralClip336) {
  LlavaConfigs c = LoadPreset("mistral_7b_clip336");
  LlavaParameterCounts n = CountLlavaParameters(c);
  EXPECT_EQ(n.language_model, kMistral7Bv03);
  EXPECT_EQ(n.vision_model, kClipL14_336 - kClipPostLayernorm);
  EXPECT_EQ(n.vision_projection, 1024 * 14336 + 14336 * 4096);  // fc1 1024 -> 14336, fc2 -> 4096, no biases
  EXPECT_EQ(c.img_seq_len, 576);  // LLaVA-1.5's 24 x 24 patches
}

TEST(Presets, Llama3SigLIP) {
  LlavaConfigs c = LoadPreset("llama3_8b_siglip");
  LlavaParameterCounts n = CountLlavaParameters(c);
  EXPECT_EQ(n.language_model, kLlama3_8B);
  EXPECT_EQ(n.vision_model, kSiglipSo400m384 - kSiglipHead);
  EXPECT_EQ(n.vision_projection, 1152 * 14336 + 14336 * 4096);
  EXPECT_EQ(c.img_seq_len, 729);
}

// At 448 px the encoder's learned position table has 32 x 32 rows instead of the 384 px checkpoint's 27 x 27.
constexpr int64_t kSiglip448 = kSiglipSo400m384 - kSiglipHead + (32 * 32 - 27 * 27) * 1152;

TEST(Presets, Qwen25SigLIPPixelShuffle) {
  LlavaConfigs c = LoadPreset("qwen2p5_7b_siglip");
  LlavaParameterCounts n = CountLlavaParameters(c);
  EXPECT_EQ(n.language_model, kQwen25_7B);
  EXPECT_EQ(n.vision_model, kSiglip448);
  EXPECT_EQ(c.projector.input_size, 4 * 1152);
  EXPECT_EQ(n.vision_projection, 4 * 1152 * 3584 + 3584 * 3584);
  EXPECT_EQ(c.img_seq_len, 256);
}

TEST(Presets, Qwen2SmallSigLIP) {
  LlavaConfigs c = LoadPreset("qwen2_0p5b_siglip");
  LlavaParameterCounts n = CountLlavaParameters(c);
  EXPECT_EQ(n.language_model, kQwen2_0p5B);
  EXPECT_EQ(n.vision_model, kSiglip448);
  EXPECT_EQ(n.vision_projection, 2 * 4608 + 4608 * 4096 + 4096 * 896);  // input LayerNorm, fc1, fc2
  EXPECT_EQ(c.img_seq_len, 256);
  EXPECT_EQ(c.language.share_embeddings_and_output_weights, true);
}

// The arithmetic the presets rely on equals the modules' own counts.
TEST(ParameterCounts, EqualTheModules) {
  for (bool tied : {true, false}) {
    for (auto pos : {transformer::PositionEmbedding::kLearnedAbsolute, transformer::PositionEmbedding::kRope}) {
      transformer::TransformerConfig t;
      t.vocab_size = 37;
      t.max_position_embeddings = 11;
      t.num_query_groups = 2;
      t.share_embeddings_and_output_weights = tied;
      t.position_embedding_type = pos;
      t.activation = tied ? transformer::Activation::kSwiGLU : transformer::Activation::kGelu;
      t.add_bias_linear = !tied;
      auto gpt = GPTModel::Create(t);
      ASSERT_TRUE(gpt.ok()) << gpt.status();
      EXPECT_EQ(GptParameterCount(t), (*gpt)->NumParameters());
    }
  }
  proto::LlavaModelConfig p;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"pb(
    language_model { num_layers: 1 hidden_size: 16 num_attention_heads: 2 vocab_size: 10 max_position_embeddings: 64 }
    vision_model { model_subtype: SIGLIP num_layers: 1 hidden_size: 8 num_attention_heads: 2 ffn_hidden_size: 12
                   patch_dim: 2 img_h: 8 img_w: 8 }
    projector { layernorm: true add_bias_linear: true }
    pixel_shuffle: true
    drop_vision_class_token: false
  )pb", &p));
  LlavaConfigs c;
  ASSERT_TRUE(LlavaConfigsFromProto(p, 0, &c).ok());
  EXPECT_EQ(c.img_seq_len, 4);
  auto vit = CLIPViTModel::Create(c.vision);
  auto proj = MultimodalProjector::Create(c.projector);
  ASSERT_TRUE(vit.ok() && proj.ok());
  EXPECT_EQ(CountLlavaParameters(c).vision_model, (*vit)->NumParameters());
  EXPECT_EQ(CountLlavaParameters(c).vision_projection, (*proj)->NumParameters());
  EXPECT_EQ(c.projector.input_size, 32);
  EXPECT_EQ(c.projector.ffn_hidden_size, 16);  // 0: the language model's hidden size
}

TEST(LlavaConfigsFromProto, ErrorsNameTheField) {
  auto error = [](const std::string& text) {
    proto::LlavaModelConfig p;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &p)) << text;
    LlavaConfigs c;
    absl::Status s = LlavaConfigsFromProto(p, 100, &c);
    EXPECT_FALSE(s.ok()) << text;
    return std::string(s.message());
  };
  EXPECT_NE(error("language_model { num_layers: 0 }").find("language_model.num_layers"), std::string::npos);
  EXPECT_NE(error("vision_model { img_h: 330 }").find("vision_model.img_h"), std::string::npos);
  EXPECT_NE(error("vision_model { num_attention_heads: 3 }").find("vision_model.num_attention_heads"),
            std::string::npos);
  // 336 / 14 = 24 is even, but CLIP's class token is kept here.
  EXPECT_NE(error("pixel_shuffle: true drop_vision_class_token: false").find("pixel_shuffle"), std::string::npos);
  // 27 x 27 patches cannot be shuffled 2 x 2.
  EXPECT_NE(error("pixel_shuffle: true drop_vision_class_token: false "
                  "vision_model { model_subtype: SIGLIP img_h: 378 img_w: 378 }")
                .find("pixel_shuffle"),
            std::string::npos);
  EXPECT_NE(error("vision_model { model_subtype: SIGLIP }").find("drop_vision_class_token"), std::string::npos);
  EXPECT_NE(error("projector { activation: SWIGLU }").find("projector.activation"), std::string::npos);
  // The default language model (1024 positions) cannot hold one 577-token tile.
  EXPECT_NE(error("drop_vision_class_token: false vision_model { img_h: 448 img_w: 448 }")
                .find("language_model.max_position_embeddings"),
            std::string::npos);
}

}  // namespace
}  // namespace megatron::models::vision
