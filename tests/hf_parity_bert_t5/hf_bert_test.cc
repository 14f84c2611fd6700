// The core BertModel against HuggingFace BertForPreTraining (post-norm, token types, padding, pooler, NSP head,
// tied MLM head with bias) on a tiny random model: both heads' logits, the pretraining loss and the gradient of
// every parameter. Fixtures: make_fixtures.py.
#include <map>
#include <memory>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "megatron/core/models/bert/bert_model.h"
#include "megatron/core/models/huggingface/hf_bert.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"
#include "tests/hf_parity_bert_t5/parity_util.h"

namespace megatron {
namespace {

using testing::HfGradients;
using testing::kRelTol;
using testing::RelativeError;

constexpr char kDir[] = "tests/hf_parity_bert_t5/testdata/bert";

class HfBert : public ::testing::Test {
 protected:
  void SetUp() override {
    proto::ModelConfig recipe_model;
    recipe_model.set_hidden_dropout(0);
    recipe_model.set_attention_dropout(0);
    auto info = models::huggingface::ReadHfBertConfig(kDir, recipe_model);
    ASSERT_TRUE(info.ok()) << info.status();
    config_ = info->config;
    auto model = models::BertModel::Create(info->config, info->options);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    absl::Status s = models::huggingface::LoadHfBertWeights(kDir, *model_);
    ASSERT_TRUE(s.ok()) << s;
    model_->SetTraining(false);
    expected_ = testing::LoadExpected(kDir);
  }
  const at::Tensor& E(const std::string& name) const { return expected_.at(name); }

  transformer::TransformerConfig config_;
  std::unique_ptr<models::BertModel> model_;
  std::map<std::string, at::Tensor> expected_;
};

TEST_F(HfBert, BothHeadsLogitsMatch) {
  at::NoGradGuard no_grad;
  models::BertOutput out = model_->Forward(E("input_ids"), E("attention_mask"), E("token_type_ids"));
  ASSERT_EQ(out.lm.sizes(), E("lm_logits").sizes());
  ASSERT_EQ(out.binary_logits.sizes(), E("nsp_logits").sizes());
  EXPECT_LE(RelativeError(out.lm, E("lm_logits")), kRelTol);
  EXPECT_LE(RelativeError(out.lm, E("lm_logits_fp64")), kRelTol);
  EXPECT_LE(RelativeError(out.binary_logits, E("nsp_logits")), kRelTol);
  EXPECT_LE(RelativeError(out.binary_logits, E("nsp_logits_fp64")), kRelTol);
}

TEST_F(HfBert, LossAndEveryGradientMatch) {
  const at::Tensor& labels = E("labels");  // -100 where no prediction is made
  models::BertOutput out = model_->Forward(E("input_ids"), E("attention_mask"), E("token_type_ids"), labels);
  const at::Tensor loss_mask = labels.ge(0);
  at::Tensor lm_only = models::BertPretrainingLoss(out.lm, loss_mask);
  EXPECT_NEAR(lm_only.item<double>(), E("lm_loss").item<double>(), kRelTol * E("lm_loss").item<double>());
  at::Tensor loss = models::BertPretrainingLoss(out.lm, loss_mask, out.binary_logits, E("next_sentence_label"));
  EXPECT_NEAR(loss.item<double>(), E("loss").item<double>(), kRelTol * E("loss").item<double>());
  loss.backward();

  auto expected_grads = models::huggingface::ConvertHfBertStateDict(HfGradients(expected_), config_);
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
  // All 46 of BertForPreTraining.named_parameters() (the decoder is tied) map onto our 38 (q/k/v merged).
  EXPECT_EQ(HfGradients(expected_).size(), 46u);
  EXPECT_EQ(checked, 38);
}

TEST_F(HfBert, PaddingIsMaskedOut) {
  // Changing a padded token must not change any real token's logits (the mask covers keys).
  at::NoGradGuard no_grad;
  at::Tensor ids = E("input_ids").clone();
  ids[1][10] = 7;
  models::BertOutput a = model_->Forward(E("input_ids"), E("attention_mask"), E("token_type_ids"));
  models::BertOutput b = model_->Forward(ids, E("attention_mask"), E("token_type_ids"));
  EXPECT_TRUE(a.lm.slice(1, 0, 9).equal(b.lm.slice(1, 0, 9)));
  EXPECT_TRUE(a.binary_logits.equal(b.binary_logits));
  // Without the mask the same change does leak (so the test above can fail).
  models::BertOutput c = model_->Forward(E("input_ids"), at::Tensor(), E("token_type_ids"));
  models::BertOutput d = model_->Forward(ids, at::Tensor(), E("token_type_ids"));
  EXPECT_FALSE(c.lm.slice(1, 0, 9).equal(d.lm.slice(1, 0, 9)));
}

TEST(HfBertConfig, ErrorsNameTheFileAndField) {
  const std::string dir = ::testing::TempDir() + "/bad_bert";
  ASSERT_TRUE(utils::MakeDirectories(dir).ok());
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", R"({"model_type": "bert", "hidden_size": 32})").ok());
  auto info = models::huggingface::ReadHfBertConfig(dir, proto::ModelConfig());
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find(dir + "/config.json"), std::string::npos) << info.status();
  EXPECT_NE(info.status().message().find("num_hidden_layers"), std::string::npos) << info.status();
  ASSERT_TRUE(utils::WriteFileAtomically(dir + "/config.json", R"({"model_type": "t5"})").ok());
  info = models::huggingface::ReadHfBertConfig(dir, proto::ModelConfig());
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("model_type"), std::string::npos) << info.status();
}

TEST(BertModel, RejectsUntiedOutputAndRope) {
  transformer::TransformerConfig c;
  c.vocab_size = 50;
  c.share_embeddings_and_output_weights = false;
  auto m = models::BertModel::Create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("share_embeddings_and_output_weights"), std::string::npos);
  c.share_embeddings_and_output_weights = true;
  c.position_embedding_type = transformer::PositionEmbedding::kRope;
  m = models::BertModel::Create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("position_embedding_type"), std::string::npos);
}

}  // namespace
}  // namespace megatron
