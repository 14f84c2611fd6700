// The core T5Model against HuggingFace T5ForConditionalGeneration on a tiny random model (relative position
// bias with logarithmic buckets in reach, encoder padding, RMS norm, no biases, unscaled attention, tied output
// scaled by d_model^-0.5): encoder output, logits, loss and the gradient of every parameter. Fixtures:
// make_fixtures.py.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include "megatron/core/models/T5/t5_model.h"
#include "megatron/core/models/common/relative_pos_embedding.h"
#include "megatron/core/models/huggingface/hf_t5.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"
#include "tests/hf_parity_bert_t5/parity_util.h"

namespace megatron {
namespace {

using testing::HfGradients;
using testing::kRelTol;
using testing::RelativeError;

constexpr char kDir[] = "tests/hf_parity_bert_t5/testdata/t5";

class HfT5 : public ::testing::Test {
 protected:
  void SetUp() override {
    proto::ModelConfig recipe_model;
    recipe_model.set_hidden_dropout(0);
    recipe_model.set_attention_dropout(0);
    auto info = models::huggingface::ReadHfT5Config(kDir, recipe_model);
    ASSERT_TRUE(info.ok()) << info.status();
    info_ = *info;
    auto model = models::T5Model::Create(info->config, info->options);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    absl::Status s = models::huggingface::LoadHfT5Weights(kDir, *model_);
    ASSERT_TRUE(s.ok()) << s;
    model_->SetTraining(false);
    expected_ = testing::LoadExpected(kDir);
  }
  const at::Tensor& E(const std::string& name) const { return expected_.at(name); }

  models::huggingface::HfT5Info info_;
  std::unique_ptr<models::T5Model> model_;
  std::map<std::string, at::Tensor> expected_;
};

TEST_F(HfT5, EncoderOutputAndLogitsMatch) {
  at::NoGradGuard no_grad;
  at::Tensor encoded = model_->Encode(E("encoder_input_ids"), E("attention_mask")).transpose(0, 1);
  ASSERT_EQ(encoded.sizes(), E("encoder_output").sizes());
  EXPECT_LE(RelativeError(encoded, E("encoder_output")), kRelTol);
  at::Tensor logits = model_->Logits(E("encoder_input_ids"), E("decoder_input_ids"), E("attention_mask"));
  ASSERT_EQ(logits.sizes(), E("logits").sizes());
  EXPECT_LE(RelativeError(logits, E("logits")), kRelTol);
  EXPECT_LE(RelativeError(logits, E("logits_fp64")), kRelTol);
}

TEST_F(HfT5, LossAndEveryGradientMatch) {
  const at::Tensor& labels = E("labels");  // -100 past the end of the shorter target
  at::Tensor per_token = model_->Loss(E("encoder_input_ids"), E("decoder_input_ids"), E("attention_mask"), labels);
  const at::Tensor mask = labels.ge(0).to(at::kFloat);
  at::Tensor loss = (per_token * mask).sum() / mask.sum();
  EXPECT_NEAR(loss.item<double>(), E("loss").item<double>(), kRelTol * E("loss").item<double>());
  loss.backward();

  auto expected_grads = models::huggingface::ConvertHfT5StateDict(HfGradients(expected_), info_);
  ASSERT_TRUE(expected_grads.ok()) << expected_grads.status();
  int checked = 0;
  for (const auto& [name, param] : model_->NamedParameters()) {
    auto it = expected_grads->find(name);
    ASSERT_NE(it, expected_grads->end()) << "no HF gradient for " << name;
    ASSERT_TRUE(param.grad().defined()) << name;
    EXPECT_LE(RelativeError(param.grad(), it->second), kRelTol) << name;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(expected_grads->size()));
  // All 47 of T5ForConditionalGeneration.named_parameters() map onto our 37 (q/k/v and k/v are merged).
  EXPECT_EQ(HfGradients(expected_).size(), 47u);
  EXPECT_EQ(checked, 37);
}

TEST_F(HfT5, EncoderPaddingIsMaskedOut) {
  at::NoGradGuard no_grad;
  at::Tensor ids = E("encoder_input_ids").clone();
  ids[1][10] = 5;  // a padded position of the second sample
  at::Tensor a = model_->Logits(E("encoder_input_ids"), E("decoder_input_ids"), E("attention_mask"));
  at::Tensor b = model_->Logits(ids, E("decoder_input_ids"), E("attention_mask"));
  EXPECT_TRUE(a.equal(b));
  at::Tensor c = model_->Logits(ids, E("decoder_input_ids"), at::Tensor());
  EXPECT_FALSE(a[1].equal(c[1]));
}

// T5's buckets worked by hand for 8 buckets, max distance 16. Bidirectional: 4 per direction, exact below 2,
// then 2 + floor(log(d / 2) / log(8) * 2), capped at 3; keys after the query add 4.
TEST(RelativePositionBucket, WorkedExamples) {
  using models::RelativeDirection;
  using models::RelativePositionEmbedding;
  const std::vector<int64_t> rel = {0, -1, 1, -2, -5, -8, -16, -100, 8, 100};
  const at::Tensor r = at::tensor(rel, at::kLong);
  const at::Tensor bi = RelativePositionEmbedding::Bucket(r, RelativeDirection::kBidirectional, 8, 16);
  const std::vector<int64_t> want_bi = {0, 1, 5, 2, 2, 3, 3, 3, 7, 7};
  // Causal: 8 buckets for the past, exact below 4, then 4 + floor(log(d / 4) / log(4) * 4) capped at 7; keys
  // after the query fall into bucket 0.
  const at::Tensor causal = RelativePositionEmbedding::Bucket(r, RelativeDirection::kCausal, 8, 16);
  const std::vector<int64_t> want_causal = {0, 1, 0, 2, 4, 6, 7, 7, 0, 0};
  for (size_t i = 0; i < rel.size(); ++i) {
    EXPECT_EQ(bi[i].item<int64_t>(), want_bi[i]) << "bidirectional, relative position " << rel[i];
    EXPECT_EQ(causal[i].item<int64_t>(), want_causal[i]) << "causal, relative position " << rel[i];
  }
}

TEST(HfT5Config, ErrorsNameTheFileAndField) {
  const std::string dir = ::testing::TempDir() + "/bad_t5";
  ASSERT_TRUE(utils::MakeDirectories(dir).ok());
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", R"({"model_type": "t5", "d_model": 32})").ok());
  auto info = models::huggingface::ReadHfT5Config(dir, proto::ModelConfig());
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find(dir + "/config.json"), std::string::npos) << info.status();
  EXPECT_NE(info.status().message().find("num_layers"), std::string::npos) << info.status();
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json",
                                         R"({"model_type": "t5", "d_model": 32, "num_layers": 2, "num_heads": 4,
                                             "d_kv": 8, "d_ff": 64, "vocab_size": 50,
                                             "feed_forward_proj": "gated-gelu"})")
                  .ok());
  info = models::huggingface::ReadHfT5Config(dir, proto::ModelConfig());
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("feed_forward_proj"), std::string::npos) << info.status();
}

}  // namespace
}  // namespace megatron
