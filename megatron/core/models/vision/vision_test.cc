// Vision components against independent references: the published tokens-per-tile values, a hand-indexed pixel
// shuffle, float64 recomputation of the encoder and projector from their parameters, and parameter counts equal
// to the modules' own (which the presets' arithmetic relies on). HuggingFace parity is in
// tests/hf_parity:hf_vision_test.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/models/vision/multimodal_projector.h"
#include "megatron/core/models/vision/pixel_shuffle.h"
#include "megatron/core/models/vision/vision_config.h"
#include "megatron/core/transformer/transformer_block.h"

namespace megatron::models::vision {
namespace {

using transformer::Activation;

int NumEmbeddings(ImageEmbeddingOptions o) {
  absl::StatusOr<int> n = GetNumImageEmbeddings(o);
  EXPECT_TRUE(n.ok()) << n.status();
  return n.ok() ? *n : -1;
}

TEST(GetNumImageEmbeddings, PublishedValues) {
  // LLaVA-1.5 / Megatron's README: CLIP ViT-L/14 @ 336 px gives 24 x 24 = 576 tokens without the class token.
  EXPECT_EQ(NumEmbeddings({.img_h = 336, .img_w = 336, .patch_dim = 14, .vision_model_type = "clip",
                           .disable_vision_class_token = true}),
            576);
  EXPECT_EQ(NumEmbeddings({.img_h = 336, .img_w = 336, .patch_dim = 14, .vision_model_type = "clip"}), 577);
  // InternViT / SigLIP at 448 px, patch 14, pixel shuffle: 256 per tile (NVLM, InternVL). InternViT keeps its
  // class token: int(1025 / 4) = 256; SigLIP never has one: 1024 / 4.
  EXPECT_EQ(NumEmbeddings({.img_h = 448, .img_w = 448, .patch_dim = 14, .vision_model_type = "internvit",
                           .pixel_shuffle = true}),
            256);
  EXPECT_EQ(NumEmbeddings({.img_h = 448, .img_w = 448, .patch_dim = 14, .vision_model_type = "siglip",
                           .pixel_shuffle = true}),
            256);
  // SigLIP ignores disable_vision_class_token=false: no class token ever (nor for hf:// encoders).
  EXPECT_EQ(NumEmbeddings({.img_h = 384, .img_w = 384, .patch_dim = 14, .vision_model_type = "siglip"}), 729);
  EXPECT_EQ(NumEmbeddings({.img_h = 384, .img_w = 384, .patch_dim = 14,
                           .vision_model_type = "hf://google/siglip-so400m-patch14-384"}),
            729);
  // RADIO at 512 px, patch 16, pixel shuffle, class tokens dropped (Nemotron-Nano-VL): 256.
  EXPECT_EQ(NumEmbeddings({.img_h = 512, .img_w = 512, .patch_dim = 16, .vision_model_type = "radio",
                           .disable_vision_class_token = true, .class_token_len = 8, .pixel_shuffle = true}),
            256);
  // cradio-g forces 8 class tokens: (1024 + 8) / 4 = 258.
  EXPECT_EQ(NumEmbeddings({.img_h = 512, .img_w = 512, .patch_dim = 16, .vision_model_type = "cradio-g",
                           .class_token_len = 1, .pixel_shuffle = true}),
            258);
  // Non-square tiles.
  EXPECT_EQ(NumEmbeddings({.img_h = 224, .img_w = 336, .patch_dim = 14, .vision_model_type = "clip",
                           .disable_vision_class_token = true}),
            16 * 24);
}

TEST(GetNumImageEmbeddings, TileTags) {
  ImageEmbeddingOptions o{.img_h = 448, .img_w = 448, .patch_dim = 14, .vision_model_type = "internvit",
                          .pixel_shuffle = true, .use_tile_tags = true, .max_num_tiles = 6};
  o.tokenizer_type = "chatml";
  EXPECT_EQ(NumEmbeddings(o), 261);
  o.tokenizer_type = "nemotron5";
  EXPECT_EQ(NumEmbeddings(o), 262);
  o.tokenizer_type = "qwen2p5";
  EXPECT_EQ(NumEmbeddings(o), 261);
  o.max_num_tiles = 12;  // two-digit tile numbers: one more token for qwen prompt formats only
  EXPECT_EQ(NumEmbeddings(o), 262);
  o.tokenizer_type = "llama3p1";
  EXPECT_EQ(NumEmbeddings(o), 261);
  o.tokenizer_type = "qwen2p0";
  o.max_num_tiles = 101;
  EXPECT_FALSE(GetNumImageEmbeddings(o).ok());
  o.tokenizer_type = "mistral";
  EXPECT_FALSE(GetNumImageEmbeddings(o).ok());
  EXPECT_FALSE(GetNumImageEmbeddings({.vision_model_type = "resnet"}).ok());
}

TEST(PixelShuffle, MatchesTheIndexRule) {
  for (int64_t sq : {2, 4, 6}) {
    const int64_t n = 2, c = 3, s = sq * sq;
    at::Tensor x = at::arange(n * s * c, at::kDouble).reshape({n, s, c});
    at::Tensor y = PixelShuffle(x);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{n, s / 4, 4 * c}));
    // Hand-indexed reference: block (i, j) = x[2i,2j] ++ x[2i,2j+1] ++ x[2i+1,2j] ++ x[2i+1,2j+1].
    auto xa = x.accessor<double, 3>();
    auto ya = y.accessor<double, 3>();
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t i = 0; i < sq / 2; ++i) {
        for (int64_t j = 0; j < sq / 2; ++j) {
          const int64_t sources[4] = {(2 * i) * sq + 2 * j, (2 * i) * sq + 2 * j + 1, (2 * i + 1) * sq + 2 * j,
                                      (2 * i + 1) * sq + 2 * j + 1};
          for (int q = 0; q < 4; ++q) {
            for (int64_t ch = 0; ch < c; ++ch) {
              ASSERT_EQ(ya[b][i * (sq / 2) + j][q * c + ch], xa[b][sources[q]][ch])
                  << "sq=" << sq << " block (" << i << "," << j << ") part " << q << " channel " << ch;
            }
          }
        }
      }
    }
  }
  EXPECT_THROW(PixelShuffle(at::zeros({1, 9, 2})), c10::Error);   // odd side
  EXPECT_THROW(PixelShuffle(at::zeros({1, 577, 2})), c10::Error);  // class token still there
}

VisionConfig TinyVision(VisionSubtype subtype) {
  VisionConfig c = MakeVisionConfig(subtype, /*num_layers=*/2, /*hidden_size=*/16, /*num_attention_heads=*/4,
                                    /*ffn_hidden_size=*/24,
                                    subtype == VisionSubtype::kClip ? Activation::kQuickGelu : Activation::kGeluTanh,
                                    subtype == VisionSubtype::kClip ? 1e-5 : 1e-6, /*patch_dim=*/4, /*img_h=*/8,
                                    /*img_w=*/12);
  return c;
}

std::vector<std::string> Names(const transformer::MegatronModule& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.NamedParameters()) out.push_back(name);
  return out;
}

TEST(CLIPViTModel, MegatronParameterNamesAndCounts) {
  auto clip = CLIPViTModel::Create(TinyVision(VisionSubtype::kClip));
  ASSERT_TRUE(clip.ok()) << clip.status();
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : (*clip)->NamedParameters()) shapes[name] = t.sizes().vec();
  EXPECT_EQ(shapes.at("conv1.weight"), (std::vector<int64_t>{16, 3, 4, 4}));
  EXPECT_EQ(shapes.count("conv1.bias"), 0u);
  EXPECT_EQ(shapes.at("class_token"), (std::vector<int64_t>{1, 1, 16}));
  EXPECT_EQ(shapes.at("position_embeddings.weight"), (std::vector<int64_t>{2 * 3 + 1, 16}));
  EXPECT_EQ(shapes.at("ln_pre.weight"), (std::vector<int64_t>{16}));
  EXPECT_EQ(shapes.count("ln_post.weight"), 0u);
  EXPECT_EQ(shapes.at("decoder.layers.1.self_attention.linear_qkv.weight"), (std::vector<int64_t>{48, 16}));
  EXPECT_EQ(shapes.at("decoder.layers.1.self_attention.linear_qkv.bias"), (std::vector<int64_t>{48}));
  EXPECT_EQ(shapes.at("decoder.layers.0.mlp.linear_fc1.weight"), (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(shapes.at("decoder.layers.0.mlp.linear_fc2.bias"), (std::vector<int64_t>{16}));
  EXPECT_EQ(shapes.count("decoder.final_layernorm.weight"), 0u);
  EXPECT_EQ((*clip)->NumParameters(), VisionParameterCount((*clip)->config()));

  auto siglip = CLIPViTModel::Create(TinyVision(VisionSubtype::kSiglip));
  ASSERT_TRUE(siglip.ok()) << siglip.status();
  std::vector<std::string> names = Names(**siglip);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  EXPECT_TRUE(has("conv1.bias"));
  EXPECT_TRUE(has("ln_post.weight"));
  EXPECT_TRUE(has("ln_post.bias"));
  EXPECT_FALSE(has("class_token"));
  EXPECT_FALSE(has("ln_pre.weight"));
  EXPECT_EQ((*siglip)->config().seq_length(), 6);
  EXPECT_EQ((*siglip)->NumParameters(), VisionParameterCount((*siglip)->config()));
}

// The encoder recomputed in float64 from its parameters with no shared code: patches cut by indexing, per-head
// softmax attention, the block written out.
at::Tensor ReferenceForward(const CLIPViTModel& model, const at::Tensor& images) {
  std::map<std::string, at::Tensor> p;
  for (const auto& [name, t] : model.NamedParameters()) p[name] = t.detach().to(at::kDouble);
  const VisionConfig& c = model.config();
  const int64_t b = images.size(0), ps = c.patch_dim, gh = c.img_h / ps, gw = c.img_w / ps;
  const int64_t h = c.transformer.hidden_size, heads = c.transformer.num_attention_heads, hn = h / heads;
  const double eps = c.transformer.layernorm_epsilon;
  at::Tensor img = images.to(at::kDouble);
  std::vector<at::Tensor> tokens;
  for (int64_t r = 0; r < gh; ++r) {
    for (int64_t col = 0; col < gw; ++col) {
      at::Tensor patch = img.slice(2, r * ps, (r + 1) * ps).slice(3, col * ps, (col + 1) * ps).reshape({b, -1});
      at::Tensor t = at::matmul(patch, p["conv1.weight"].reshape({h, -1}).t());
      if (p.count("conv1.bias")) t = t + p["conv1.bias"];
      tokens.push_back(t);
    }
  }
  at::Tensor x = at::stack(tokens, 1);  // [b, patches, h]
  if (p.count("class_token")) x = at::cat({p["class_token"].expand({b, -1, -1}), x}, 1);
  x = x + p["position_embeddings.weight"];
  auto ln = [&](const at::Tensor& v, const std::string& name) {
    at::Tensor mean = v.mean(-1, true), var = (v - mean).pow(2).mean(-1, true);
    return (v - mean) / at::sqrt(var + eps) * p[name + ".weight"] + p[name + ".bias"];
  };
  auto act = [&](const at::Tensor& v) {
    if (c.transformer.activation == Activation::kQuickGelu) return v * at::sigmoid(1.702 * v);
    return 0.5 * v * (1 + at::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v.pow(3))));
  };
  if (p.count("ln_pre.weight")) x = ln(x, "ln_pre");
  const int64_t s = x.size(1);
  for (int i = 0; i < c.transformer.num_layers; ++i) {
    const std::string l = "decoder.layers." + std::to_string(i) + ".";
    at::Tensor y = ln(x, l + "input_layernorm");
    // Megatron's grouped QKV with one head per group: rows [q_h, k_h, v_h] for each head h.
    at::Tensor qkv = (at::matmul(y, p[l + "self_attention.linear_qkv.weight"].t()) +
                      p[l + "self_attention.linear_qkv.bias"])
                         .reshape({b, s, heads, 3, hn});
    std::vector<at::Tensor> outs;
    for (int64_t hd = 0; hd < heads; ++hd) {
      at::Tensor q = qkv.select(2, hd).select(2, 0), k = qkv.select(2, hd).select(2, 1),
                 v = qkv.select(2, hd).select(2, 2);
      at::Tensor scores = at::matmul(q, k.transpose(1, 2)) / std::sqrt(static_cast<double>(hn));
      outs.push_back(at::matmul(at::softmax(scores, -1), v));
    }
    at::Tensor attn = at::matmul(at::cat(outs, -1), p[l + "self_attention.linear_proj.weight"].t()) +
                      p[l + "self_attention.linear_proj.bias"];
    x = x + attn;
    y = ln(x, l + "pre_mlp_layernorm");
    y = act(at::matmul(y, p[l + "mlp.linear_fc1.weight"].t()) + p[l + "mlp.linear_fc1.bias"]);
    x = x + at::matmul(y, p[l + "mlp.linear_fc2.weight"].t()) + p[l + "mlp.linear_fc2.bias"];
  }
  if (p.count("ln_post.weight")) x = ln(x, "ln_post");
  return x;
}

double RelativeError(const at::Tensor& actual, const at::Tensor& expected) {
  return (actual.to(at::kDouble) - expected).abs().max().item<double>() / expected.abs().max().item<double>();
}

class VisionForward : public ::testing::TestWithParam<VisionSubtype> {};

TEST_P(VisionForward, MatchesFloat64Recomputation) {
  at::manual_seed(5);
  auto model = CLIPViTModel::Create(TinyVision(GetParam()));
  ASSERT_TRUE(model.ok()) << model.status();
  // Norm weights/biases away from 1/0 so every parameter shows in the output.
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : (*model)->NamedParameters()) {
      if (name.find("norm") != std::string::npos || name.find("ln_") != std::string::npos) {
        t.add_(at::randn(t.sizes()) * 0.2);
      } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
        t.add_(at::randn(t.sizes()) * 0.1);
      } else if (name.find("decoder") != std::string::npos) {
        t.copy_(at::randn(t.sizes()) * 0.2);
      }
    }
  }
  (*model)->SetTraining(false);
  at::Tensor images = at::randn({3, 3, 8, 12});
  at::Tensor out = (*model)->Forward(images);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, (*model)->config().seq_length(), 16}));
  EXPECT_LE(RelativeError(out, ReferenceForward(**model, images)), 1e-5);
  EXPECT_THROW((*model)->Forward(at::randn({1, 3, 12, 8})), c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Subtypes, VisionForward, ::testing::Values(VisionSubtype::kClip, VisionSubtype::kSiglip),
                         [](const auto& info) { return std::string(VisionSubtypeName(info.param)); });

// SigLIP's "valid" convolution drops a remainder that is not a whole patch (so400m/14 at 384 px), as HF does.
TEST(VisionConfig, SiglipAllowsAPartialPatchRemainder) {
  VisionConfig c = TinyVision(VisionSubtype::kSiglip);
  c.img_h = 10;  // 2 whole patches of 4, 2 pixels unused
  c.img_w = 13;  // 3 whole patches, 1 pixel unused
  auto model = CLIPViTModel::Create(c);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(c.seq_length(), 6);
  at::Tensor images = at::randn({2, 3, 10, 13});
  EXPECT_LE(RelativeError((*model)->Forward(images), ReferenceForward(**model, images)), 1e-5);
}

TEST(VisionConfig, PresetsDescribeThemselves) {
  EXPECT_NE(ClipVitL14Config().transformer.DebugString().find("act=quick_gelu"), std::string::npos);
  EXPECT_NE(SiglipSo400mConfig().transformer.DebugString().find("act=gelu_tanh"), std::string::npos);
  EXPECT_EQ(ClipVitL14Config().seq_length(), 577);
  EXPECT_EQ(SiglipSo400mConfig().seq_length(), 729);
  EXPECT_TRUE(ClipVitL14Config().Validate().ok());
  EXPECT_TRUE(SiglipSo400mConfig().Validate().ok());
}

TEST(VisionConfig, ErrorsNameTheField) {
  VisionConfig c = TinyVision(VisionSubtype::kClip);
  c.img_h = 10;
  absl::Status s = c.Validate();
  EXPECT_NE(s.message().find("vision_model.img_h"), std::string::npos) << s;
  c = TinyVision(VisionSubtype::kClip);
  c.transformer.num_attention_heads = 0;
  s = c.Validate();
  EXPECT_NE(s.message().find("vision_model.num_attention_heads"), std::string::npos) << s;
  c = TinyVision(VisionSubtype::kClip);
  c.transformer.attn_mask_type = transformer::AttnMask::kCausal;
  EXPECT_FALSE(CLIPViTModel::Create(c).ok());
}

TEST(TransformerBlockParameterCount, EqualsTheModule) {
  transformer::TransformerConfig c;
  c.num_layers = 3;
  c.hidden_size = 24;
  c.num_attention_heads = 6;
  c.num_query_groups = 2;
  c.kv_channels = 5;
  c.ffn_hidden_size = 40;
  c.vocab_size = 7;
  for (Activation act : {Activation::kSwiGLU, Activation::kGelu}) {
    for (bool bias : {false, true}) {
      for (bool final_norm : {false, true}) {
        c.activation = act;
        c.add_bias_linear = bias;
        c.add_qkv_bias = !bias;
        c.final_layernorm = final_norm;
        c.normalization = bias ? transformer::Normalization::kLayerNorm : transformer::Normalization::kRMSNorm;
        transformer::TransformerBlock block(c, transformer::LocalBackend());
        EXPECT_EQ(TransformerBlockParameterCount(c), block.NumParameters());
      }
    }
  }
}

TEST(MultimodalProjector, MlpWithNormMatchesFloat64) {
  at::manual_seed(3);
  ProjectorConfig c{.projector_type = ProjectorType::kMlp, .input_size = 12, .ffn_hidden_size = 20,
                    .hidden_size = 8, .activation = Activation::kGelu, .add_bias_linear = true, .layernorm = true};
  auto proj = MultimodalProjector::Create(c);
  ASSERT_TRUE(proj.ok()) << proj.status();
  std::map<std::string, at::Tensor> p;
  for (const auto& [name, t] : (*proj)->NamedParameters()) {
    at::NoGradGuard no_grad;
    t.copy_(at::randn(t.sizes()) * 0.3 + (name.find("layer_norm_weight") != std::string::npos ? 1.0 : 0.0));
    p[name] = t.detach().to(at::kDouble);
  }
  EXPECT_EQ(Names(**proj), (std::vector<std::string>{"encoder.linear_fc1.weight", "encoder.linear_fc1.bias",
                                                     "encoder.linear_fc1.layer_norm_weight",
                                                     "encoder.linear_fc1.layer_norm_bias",
                                                     "encoder.linear_fc2.weight", "encoder.linear_fc2.bias"}));
  EXPECT_EQ((*proj)->NumParameters(), ProjectorParameterCount(c));
  at::Tensor x = at::randn({5, 2, 12});
  at::Tensor xd = x.to(at::kDouble);
  at::Tensor mean = xd.mean(-1, true), var = (xd - mean).pow(2).mean(-1, true);
  at::Tensor n = (xd - mean) / at::sqrt(var + 1e-5) * p["encoder.linear_fc1.layer_norm_weight"] +
                 p["encoder.linear_fc1.layer_norm_bias"];
  at::Tensor h = at::matmul(n, p["encoder.linear_fc1.weight"].t()) + p["encoder.linear_fc1.bias"];
  h = 0.5 * h * (1 + at::erf(h / std::sqrt(2.0)));
  at::Tensor expected = at::matmul(h, p["encoder.linear_fc2.weight"].t()) + p["encoder.linear_fc2.bias"];
  EXPECT_LE(RelativeError((*proj)->Forward(x), expected), 1e-5);
}

TEST(MultimodalProjector, AffineAndPlainMlp) {
  ProjectorConfig affine{.projector_type = ProjectorType::kAffine, .input_size = 12, .hidden_size = 8,
                         .add_bias_linear = true};
  auto a = MultimodalProjector::Create(affine);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(Names(**a), (std::vector<std::string>{"encoder.weight", "encoder.bias"}));
  EXPECT_EQ((*a)->NumParameters(), ProjectorParameterCount(affine));
  at::Tensor x = at::randn({3, 12});
  auto params = (*a)->NamedParameters();
  EXPECT_LE(RelativeError((*a)->Forward(x), (at::matmul(x, params[0].second.t()) + params[1].second)
                                                .detach().to(at::kDouble)),
            1e-6);

  ProjectorConfig mlp{.input_size = 12, .ffn_hidden_size = 16, .hidden_size = 8};
  auto m = MultimodalProjector::Create(mlp);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Names(**m), (std::vector<std::string>{"encoder.linear_fc1.weight", "encoder.linear_fc2.weight"}));
  EXPECT_EQ((*m)->Forward(x).sizes(), (std::vector<int64_t>{3, 8}));
  EXPECT_THROW((*m)->Forward(at::randn({3, 11})), c10::Error);

  mlp.activation = Activation::kSwiGLU;
  absl::StatusOr<std::unique_ptr<MultimodalProjector>> bad = MultimodalProjector::Create(mlp);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("projector.activation"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace megatron::models::vision
