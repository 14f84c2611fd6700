// LLaVAModel wiring: the loss equals the language model run on a sequence built by hand from the encoder and
// projector outputs (class token dropped, tiles in <image> order, labels/loss mask as the research notes'
// worked example); decoding with the KV cache equals recomputing the whole sequence; freezing leaves gradients
// only where they belong; bad configurations are rejected naming the field.
#include "megatron/core/models/multimodal/llava_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include "megatron/core/tensor_parallel/random.h"

namespace megatron::models::multimodal {
namespace {

constexpr int64_t kImageToken = 49;

LlavaConfig TinyConfig() {
  LlavaConfig c;
  c.language.num_layers = 2;
  c.language.hidden_size = 24;
  c.language.num_attention_heads = 4;
  c.language.num_query_groups = 2;
  c.language.kv_channels = 6;
  c.language.ffn_hidden_size = 40;
  c.language.normalization = transformer::Normalization::kRMSNorm;
  c.language.activation = transformer::Activation::kSwiGLU;
  c.language.position_embedding_type = transformer::PositionEmbedding::kRope;
  c.language.hidden_dropout = c.language.attention_dropout = 0.0;
  c.language.share_embeddings_and_output_weights = false;
  c.language.add_bias_linear = false;
  c.language.vocab_size = 50;
  c.language.max_position_embeddings = 64;
  c.vision = vision::MakeVisionConfig(vision::VisionSubtype::kClip, 2, 16, 2, 32, transformer::Activation::kQuickGelu,
                                      1e-5, /*patch_dim=*/4, /*img_h=*/8, /*img_w=*/8);
  c.projector.input_size = 16;
  c.projector.ffn_hidden_size = 24;
  c.projector.hidden_size = 24;
  c.drop_vision_class_token = true;
  c.image_token_index = kImageToken;
  return c;
}

std::unique_ptr<LLaVAModel> Make(const LlavaConfig& c) {
  tensor_parallel::ManualSeed(7);
  auto model = LLaVAModel::Create(c);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

TEST(LLaVAModelTest, LossEqualsTheLanguageModelOnTheHandBuiltSequence) {
  LlavaConfig c = TinyConfig();
  auto model = Make(c);
  ASSERT_EQ(c.img_seq_len(), 4);  // (8/4)^2 patches, class token dropped
  // One sample: [3, IMG(2 tiles), 5, 6], labels [IMG, 5, 6, 7].
  const at::Tensor ids = at::tensor(std::vector<int64_t>{3, kImageToken, 5, 6}).view({1, 4});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{kImageToken, 5, 6, 7}).view({1, 4});
  const at::Tensor mask = at::ones({1, 4});
  const at::Tensor images = at::randn({2, 3, 8, 8});
  LlavaOutput out = model->Forward(images, ids, labels, mask, at::tensor(std::vector<int64_t>{2}));
  ASSERT_EQ(out.output.sizes(), (at::IntArrayRef{1, 11}));  // 4 - 1 + 2 * 4

  // By hand: encoder -> drop the class token -> projector; sequence [e3, tile0 x4, tile1 x4, e5, e6].
  at::Tensor vit = model->vision_model().Forward(images).narrow(1, 1, 4);  // [2, 4, 16]
  const auto named = model->NamedParameters();
  at::Tensor fc1_w, fc2_w, word;
  for (const auto& [name, p] : named) {
    if (name == "vision_projection.encoder.linear_fc1.weight") fc1_w = p;
    if (name == "vision_projection.encoder.linear_fc2.weight") fc2_w = p;
    if (name == "language_model.embedding.word_embeddings.weight") word = p;
  }
  ASSERT_TRUE(fc1_w.defined() && fc2_w.defined() && word.defined());
  at::Tensor projected = at::gelu(vit.matmul(fc1_w.t())).matmul(fc2_w.t()).reshape({8, 24});
  at::Tensor seq = at::cat({word[3].unsqueeze(0), projected, word[5].unsqueeze(0), word[6].unsqueeze(0)});
  // The last image position predicts 5, the token after the image (labels[1] of the input).
  at::Tensor hand_labels =
      at::tensor(std::vector<int64_t>{-100, -100, -100, -100, -100, -100, -100, -100, 5, 6, 7}).view({1, 11});
  at::Tensor expected = model->language_model().LossFromEmbeddings(seq.unsqueeze(1), hand_labels);
  EXPECT_TRUE(out.labels.equal(hand_labels)) << out.labels;
  const at::Tensor expected_mask = at::tensor(std::vector<float>{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}).view({1, 11});
  EXPECT_TRUE(out.loss_mask.equal(expected_mask)) << out.loss_mask;
  EXPECT_TRUE(out.output.allclose(expected, 1e-5, 1e-6)) << out.output << expected;
}

// Sequence / context parallel layouts: the combined sequence (11 positions here) is padded at its end by the
// get_padding rule (SP at TP=2: to 12; SP at TP=2 with CP=2: to 16; CP=2 alone: to 12) with loss mask 0 and
// label 0, and the per-token loss of the real positions is the unpadded model's (causal attention).
TEST(LLaVAModelTest, SequenceAndContextParallelLayoutsPadTheCombinedSequence) {
  const LlavaConfig plain = TinyConfig();
  auto reference = Make(plain);
  const at::Tensor ids = at::tensor(std::vector<int64_t>{3, kImageToken, 5, 6}).view({1, 4});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{kImageToken, 5, 6, 7}).view({1, 4});
  const at::Tensor mask = at::ones({1, 4});
  const at::Tensor images = at::randn({2, 3, 8, 8});
  const at::Tensor tiles = at::tensor(std::vector<int64_t>{2});
  const LlavaOutput unpadded = reference->Forward(images, ids, labels, mask, tiles);
  ASSERT_EQ(unpadded.output.size(1), 11);
  struct Case {
    int tp, cp;
    bool sp;
    int64_t length;
  };
  for (const Case& k : {Case{2, 1, true, 12}, Case{2, 2, true, 16}, Case{1, 2, false, 12}, Case{4, 1, false, 11}}) {
    SCOPED_TRACE(::testing::Message() << "tp=" << k.tp << " cp=" << k.cp << " sp=" << k.sp);
    LlavaConfig c = plain;
    c.language_padding.tp = k.tp;
    c.language_padding.cp = k.cp;
    c.language_padding.sequence_parallel = k.sp;
    auto model = Make(c);  // same seed: the same weights as the reference
    const LlavaOutput out = model->Forward(images, ids, labels, mask, tiles);
    ASSERT_EQ(out.output.size(1), k.length);
    ASSERT_EQ(out.loss_mask.size(1), k.length);
    ASSERT_EQ(out.labels.size(1), k.length);
    EXPECT_TRUE(out.output.narrow(1, 0, 11).allclose(unpadded.output, 1e-5, 1e-6));
    EXPECT_TRUE(out.loss_mask.narrow(1, 0, 11).equal(unpadded.loss_mask));
    EXPECT_EQ(out.loss_mask.narrow(1, 11, k.length - 11).sum().item<float>(), 0.0f);
    EXPECT_EQ(out.labels.narrow(1, 11, k.length - 11).abs().sum().item<int64_t>(), 0);
  }
  LlavaConfig bad = plain;
  bad.language_padding.cp = 0;
  auto rejected = LLaVAModel::Create(bad);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(std::string(rejected.status().message()).find("language_padding"), std::string::npos);
}

TEST(LLaVAModelTest, KVCacheDecodingEqualsRecomputation) {
  auto model = Make(TinyConfig());
  model->SetTraining(false);
  at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({1, 3, 8, 8});
  const at::Tensor tiles = at::tensor(std::vector<int64_t>{1});
  const at::Tensor prompt = at::tensor(std::vector<int64_t>{kImageToken, 4, 9}).view({1, 3});
  transformer::KVCache cache(2);
  at::Tensor first = model->Forward(images, prompt, {}, {}, tiles, &cache).output;  // [1, 6, V]
  ASSERT_EQ(cache.seq_len, 6);
  at::Tensor next = model->language_model().Logits(at::tensor(std::vector<int64_t>{11}).view({1, 1}), {}, &cache);
  const at::Tensor full_ids = at::tensor(std::vector<int64_t>{kImageToken, 4, 9, 11}).view({1, 4});
  at::Tensor full = model->Forward(images, full_ids, {}, {}, tiles).output;  // [1, 7, V]
  EXPECT_TRUE(first.allclose(full.narrow(1, 0, 6), 1e-5, 1e-5));
  EXPECT_TRUE(next.select(1, 0).allclose(full.select(1, 6), 1e-4, 1e-5)) << (next.select(1, 0) - full.select(1, 6)).abs().max();
}

TEST(LLaVAModelTest, FreezingKeepsGradientsWhereTheyBelong) {
  auto model = Make(TinyConfig());
  model->Freeze(/*language_model=*/true, /*vision_model=*/true, /*vision_projection=*/false);
  const at::Tensor ids = at::tensor(std::vector<int64_t>{kImageToken, 4, 9}).view({1, 3});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{4, 9, 2}).view({1, 3});
  LlavaOutput out = model->Forward(at::randn({1, 3, 8, 8}), ids, labels, at::ones({1, 3}), {});
  (out.output * out.loss_mask).sum().backward();
  for (const auto& [name, p] : model->NamedParameters()) {
    const bool projector = name.rfind("vision_projection.", 0) == 0;
    EXPECT_EQ(p.requires_grad(), projector) << name;
    EXPECT_EQ(p.grad().defined(), projector) << name;
    if (projector) {
      EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << name;
    }
  }
}

TEST(LLaVAModelTest, TextOnlyBatchesKeepTheProjectorInTheGraph) {
  auto model = Make(TinyConfig());
  const at::Tensor ids = at::tensor(std::vector<int64_t>{1, 4, 9}).view({1, 3});
  LlavaOutput out = model->Forward({}, ids, ids, at::ones({1, 3}), {});
  out.output.sum().backward();
  for (const auto& [name, p] : model->NamedParameters()) {
    if (name.rfind("vision_projection.", 0) == 0) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0) << name;
    }
  }
}

TEST(LLaVAModelTest, RejectsInconsistentConfigurations) {
  LlavaConfig c = TinyConfig();
  c.projector.input_size = 17;
  EXPECT_NE(LLaVAModel::Create(c).status().message().find("projector.input_size"), std::string::npos);
  c = TinyConfig();
  c.vision = vision::MakeVisionConfig(vision::VisionSubtype::kSiglip, 1, 16, 2, 32, transformer::Activation::kGeluTanh,
                                      1e-6, 4, 8, 8);
  EXPECT_NE(LLaVAModel::Create(c).status().message().find("drop_vision_class_token"), std::string::npos);
  c = TinyConfig();
  c.language_max_sequence_length = 4;
  EXPECT_NE(LLaVAModel::Create(c).status().message().find("language_max_sequence_length"), std::string::npos);
}

}  // namespace
}  // namespace megatron::models::multimodal
