// On a GPU: the legacy models with FusedScaleMaskSoftmax taking the fused kernels (bf16 parameters, shapes the
// availability rule accepts) give the logits, loss and gradients of the same legacy model on the fp32 fallback
// path and of the core model, within bf16 tolerance; in fp32 on the GPU legacy and core agree to 1e-5.
#include <map>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "legacy/checkpoint/convert.h"
#include "legacy/model/bert_model.h"
#include "legacy/model/gpt_model.h"
#include "megatron/core/models/bert/bert_model.h"
#include "megatron/core/models/gpt/gpt_model.h"

namespace megatron {
namespace {

using transformer::TransformerConfig;

// GPU tests skip (never pass silently) on machines without a CUDA device.
#define SKIP_WITHOUT_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device on this machine"

double RelDiff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kDouble).cpu(), y = b.detach().to(at::kDouble).cpu();
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-30);
}

TransformerConfig Config() {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 64;
  c.num_attention_heads = 4;
  c.num_query_groups = 4;
  c.kv_channels = 16;
  c.ffn_hidden_size = 128;
  c.vocab_size = 128;
  c.max_position_embeddings = 32;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  return c;
}

void ToCuda(transformer::MegatronModule& m, at::ScalarType dtype) {
  m.ToDevice(at::Device(at::kCUDA, 0));
  at::NoGradGuard no_grad;
  for (auto& p : m.Parameters()) p.set_data(p.to(dtype));
}

template <typename Legacy>
void LoadConverted(const transformer::MegatronModule& core, Legacy& legacy_model, legacy::ModelFamily f) {
  auto converted = legacy::CoreToLegacy(core.StateDict(), f);
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_TRUE(legacy_model.LoadStateDict(*converted, transformer::LoadMode::kStrict).ok());
}

std::map<std::string, at::Tensor> Grads(const transformer::MegatronModule& m) {
  std::map<std::string, at::Tensor> g;
  for (const auto& [name, p] : m.NamedParameters()) g[name] = p.grad();
  return g;
}

TEST(LegacyVsCoreGpu, GptFusedSoftmaxPath) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(7);
  const TransformerConfig config = Config();
  auto core = models::GPTModel::Create(config);
  legacy::LegacyOptions fused_opts;
  fused_opts.bf16 = true;
  legacy::LegacyOptions fallback_opts = fused_opts;
  fallback_opts.masked_softmax_fusion = false;
  auto fused = legacy::GPTModel::Create(config, fused_opts);
  auto fallback = legacy::GPTModel::Create(config, fallback_opts);
  ASSERT_TRUE(core.ok() && fused.ok() && fallback.ok());
  LoadConverted(**core, **fused, legacy::ModelFamily::kGpt);
  LoadConverted(**core, **fallback, legacy::ModelFamily::kGpt);
  for (transformer::MegatronModule* m : {static_cast<transformer::MegatronModule*>(core->get()),
                                         static_cast<transformer::MegatronModule*>(fused->get()),
                                         static_cast<transformer::MegatronModule*>(fallback->get())}) {
    ToCuda(*m, at::kBFloat16);
  }
  const auto cuda = at::TensorOptions().dtype(at::kLong).device(at::kCUDA, 0);
  const at::Tensor ids = at::randint(0, config.vocab_size, {2, 32}, cuda);
  const at::Tensor labels = at::randint(0, config.vocab_size, {2, 32}, cuda);
  const at::Tensor scores = at::zeros({2, 4, 32, 32}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA, 0));
  ASSERT_EQ((*fused)->language_model().encoder().layer(0).self_attention().softmax().ChoosePath(scores),
            legacy::SoftmaxPath::kFused);
  ASSERT_EQ((*fallback)->language_model().encoder().layer(0).self_attention().softmax().ChoosePath(scores),
            legacy::SoftmaxPath::kFallback);

  EXPECT_LE(RelDiff((*fused)->Logits(ids), (*fallback)->Logits(ids)), 2e-2);
  EXPECT_LE(RelDiff((*fused)->Logits(ids), (*core)->Logits(ids, {})), 2e-2);
  const at::Tensor lf = (*fused)->Loss(ids, {}, {}, labels).mean();
  const at::Tensor lb = (*fallback)->Loss(ids, {}, {}, labels).mean();
  EXPECT_LE(RelDiff(lf, lb), 1e-2);
  lf.backward();
  lb.backward();
  const auto gf = Grads(**fused), gb = Grads(**fallback);
  for (const auto& [name, g] : gb) EXPECT_LE(RelDiff(gf.at(name), g), 5e-2) << name;
}

TEST(LegacyVsCoreGpu, BertFusedMaskedSoftmaxPath) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(8);
  TransformerConfig config = Config();
  config.attn_mask_type = transformer::AttnMask::kPadding;
  auto core = models::BertModel::Create(config);
  legacy::LegacyOptions opts;
  opts.bf16 = true;
  auto fused = legacy::BertModel::Create(config, opts);
  ASSERT_TRUE(core.ok() && fused.ok());
  LoadConverted(**core, **fused, legacy::ModelFamily::kBert);
  ToCuda(**core, at::kBFloat16);
  ToCuda(**fused, at::kBFloat16);
  const auto cuda = at::TensorOptions().dtype(at::kLong).device(at::kCUDA, 0);
  const at::Tensor ids = at::randint(0, config.vocab_size, {2, 32}, cuda);
  const at::Tensor types = at::randint(0, 2, {2, 32}, cuda);
  at::Tensor padding = at::ones({2, 32}, cuda);
  padding.index_put_({1, at::indexing::Slice(24, 32)}, 0);
  const at::Tensor scores = at::zeros({2, 4, 32, 32}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA, 0));
  ASSERT_EQ((*fused)->language_model().encoder().layer(0).self_attention().softmax().ChoosePath(scores),
            legacy::SoftmaxPath::kFused);
  const at::Tensor real = padding.eq(1);
  const auto a = (*fused)->Forward(ids, padding, types);
  const auto c = (*core)->Forward(ids, padding, types);
  EXPECT_LE(RelDiff(a.lm.index({real}), c.lm.index({real})), 2e-2);
  EXPECT_LE(RelDiff(a.binary_logits, c.binary_logits), 2e-2);
}

TEST(LegacyVsCoreGpu, GptFp32MatchesCore) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(9);
  const TransformerConfig config = Config();
  auto core = models::GPTModel::Create(config);
  auto old = legacy::GPTModel::Create(config);
  ASSERT_TRUE(core.ok() && old.ok());
  LoadConverted(**core, **old, legacy::ModelFamily::kGpt);
  ToCuda(**core, at::kFloat);
  ToCuda(**old, at::kFloat);
  const auto cuda = at::TensorOptions().dtype(at::kLong).device(at::kCUDA, 0);
  const at::Tensor ids = at::randint(0, config.vocab_size, {2, 32}, cuda);
  const at::Tensor labels = at::randint(0, config.vocab_size, {2, 32}, cuda);
  EXPECT_LE(RelDiff((*old)->Logits(ids), (*core)->Logits(ids, {})), 1e-5);
  const at::Tensor lo = (*old)->Loss(ids, {}, {}, labels).mean();
  const at::Tensor lc = (*core)->Loss(ids, {}, labels).mean();
  EXPECT_LE(RelDiff(lo, lc), 1e-5);
}

}  // namespace
}  // namespace megatron
