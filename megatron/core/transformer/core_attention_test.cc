// CoreAttention masks against a float64 recomputation written out loop by loop.
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "megatron/core/transformer/layers.h"

namespace megatron::transformer {
namespace {

// out[b,n,i,:] = sum_j softmax_j(q_i . k_j * scale | allowed(i, j)) v_j; a row with nothing allowed is zero.
// With `bias`, bias(b, n, i, j) is added to the scaled score.
at::Tensor Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                     const std::function<bool(int64_t, int64_t, int64_t)>& allowed,
                     const std::function<double(int64_t, int64_t, int64_t, int64_t)>& bias = nullptr) {
  const int64_t B = q.size(0), N = q.size(1), SQ = q.size(2), SK = k.size(2), H = q.size(3);
  at::Tensor out = at::zeros({B, N, SQ, H}, q.options().dtype(at::kDouble));
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < SQ; ++i) {
        std::vector<double> s(SK, -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < SK; ++j) {
          if (!allowed(b, i, j)) continue;
          double d = 0;
          for (int64_t h = 0; h < H; ++h) d += qa[b][n][i][h] * ka[b][n][j][h];
          s[j] = d * scale + (bias ? bias(b, n, i, j) : 0.0);
          mx = std::max(mx, s[j]);
        }
        if (std::isinf(mx)) continue;
        double z = 0;
        for (int64_t j = 0; j < SK; ++j) z += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx);
        for (int64_t j = 0; j < SK; ++j) {
          if (std::isinf(s[j])) continue;
          const double p = std::exp(s[j] - mx) / z;
          for (int64_t h = 0; h < H; ++h) oa[b][n][i][h] += p * va[b][n][j][h];
        }
      }
  return out;
}

class CoreAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.kv_channels = 8;
    attention_ = LocalBackend()->MakeCoreAttention(config_);
    q_ = at::randn({2, 3, 5, 8}, at::kDouble);
    k_ = at::randn({2, 3, 5, 8}, at::kDouble);
    v_ = at::randn({2, 3, 5, 8}, at::kDouble);
  }
  double scale() const { return 1.0 / std::sqrt(8.0); }
  TransformerConfig config_;
  std::unique_ptr<CoreAttention> attention_;
  at::Tensor q_, k_, v_;
};

TEST_F(CoreAttentionTest, CausalAndNoMask) {
  at::Tensor causal = attention_->Forward(q_, k_, v_, AttnMask::kCausal, 0.0);
  EXPECT_TRUE(causal.allclose(Reference(q_, k_, v_, scale(), [](int64_t, int64_t i, int64_t j) { return j <= i; }),
                              1e-10, 1e-12));
  at::Tensor full = attention_->Forward(q_, k_, v_, AttnMask::kNone, 0.0);
  EXPECT_TRUE(full.allclose(Reference(q_, k_, v_, scale(), [](int64_t, int64_t, int64_t) { return true; }), 1e-10,
                            1e-12));
}

TEST_F(CoreAttentionTest, PaddingMaskTrueMeansMaskedAndEmptyRowsAreZero) {
  // Key padding per sample (sample 0 has 3 real tokens, sample 1 all 5), and sample 0's query 4 sees nothing.
  at::Tensor mask = at::zeros({2, 1, 5, 5}, at::kBool);
  mask.select(0, 0).narrow(-1, 3, 2).fill_(true);
  mask.select(0, 0).select(1, 4).fill_(true);
  auto allowed = [&](int64_t b, int64_t i, int64_t j) { return !mask[b][0][i][j].item<bool>(); };
  at::Tensor out = attention_->Forward(q_, k_, v_, AttnMask::kPadding, 0.0, mask);
  at::Tensor ref = Reference(q_, k_, v_, scale(), allowed);
  EXPECT_TRUE(out.allclose(ref, 1e-10, 1e-12)) << (out - ref).abs().max();
  EXPECT_EQ(out[0][1][4].abs().sum().item<double>(), 0.0);
  EXPECT_THROW(attention_->Forward(q_, k_, v_, AttnMask::kPadding, 0.0), c10::Error);
}

// An additive bias [1, np, sq, sk] (T5's relative position bias) with each mask type, and its gradient against
// central differences.
TEST_F(CoreAttentionTest, AdditiveBiasWithEveryMaskAndItsGradient) {
  at::Tensor bias = at::randn({1, 3, 5, 5}, at::kDouble);
  auto b = [&](int64_t, int64_t n, int64_t i, int64_t j) { return bias[0][n][i][j].item<double>(); };
  at::Tensor none = attention_->Forward(q_, k_, v_, AttnMask::kNone, 0.0, {}, bias);
  EXPECT_TRUE(none.allclose(Reference(q_, k_, v_, scale(), [](int64_t, int64_t, int64_t) { return true; }, b),
                            1e-10, 1e-12));
  at::Tensor causal = attention_->Forward(q_, k_, v_, AttnMask::kCausal, 0.0, {}, bias);
  EXPECT_TRUE(causal.allclose(
      Reference(q_, k_, v_, scale(), [](int64_t, int64_t i, int64_t j) { return j <= i; }, b), 1e-10, 1e-12));
  at::Tensor mask = at::zeros({2, 1, 1, 5}, at::kBool);
  mask.select(0, 1).narrow(-1, 2, 3).fill_(true);  // sample 1: keys 2.. are padding
  at::Tensor padded = attention_->Forward(q_, k_, v_, AttnMask::kPadding, 0.0, mask, bias);
  EXPECT_TRUE(padded.allclose(
      Reference(q_, k_, v_, scale(), [](int64_t s, int64_t, int64_t j) { return s == 0 || j < 2; }, b), 1e-10,
      1e-12));

  at::Tensor weights = at::randn({2, 3, 5, 8}, at::kDouble);
  at::Tensor leaf = bias.clone().set_requires_grad(true);
  (attention_->Forward(q_, k_, v_, AttnMask::kCausal, 0.0, {}, leaf) * weights).sum().backward();
  const double h = 1e-6;
  for (int64_t n = 0; n < 3; ++n) {
    for (int64_t i = 0; i < 5; ++i) {
      for (int64_t j = 0; j < 5; ++j) {
        at::Tensor plus = bias.clone(), minus = bias.clone();
        plus[0][n][i][j] += h;
        minus[0][n][i][j] -= h;
        const double fd = ((attention_->Forward(q_, k_, v_, AttnMask::kCausal, 0.0, {}, plus) * weights).sum() -
                           (attention_->Forward(q_, k_, v_, AttnMask::kCausal, 0.0, {}, minus) * weights).sum())
                              .item<double>() /
                          (2 * h);
        EXPECT_NEAR(leaf.grad()[0][n][i][j].item<double>(), fd, 1e-7) << n << " " << i << " " << j;
      }
    }
  }
}

// Grouped-query attention: k/v with ng < np heads (not expanded by the caller) equal the expanded heads, query
// head h using group h / (np / ng), with every mask type; a head count that does not divide is one error.
TEST_F(CoreAttentionTest, GroupedKeyValuesEqualExpandedHeads) {
  const at::Tensor q = at::randn({2, 6, 5, 8}, at::kDouble);
  const at::Tensor k = at::randn({2, 2, 7, 8}, at::kDouble), v = at::randn({2, 2, 7, 8}, at::kDouble);
  const at::Tensor ke = k.repeat_interleave(3, 1), ve = v.repeat_interleave(3, 1);
  at::Tensor mask = at::zeros({2, 1, 5, 7}, at::kBool);
  mask.select(0, 1).narrow(-1, 4, 3).fill_(true);
  for (AttnMask m : {AttnMask::kNone, AttnMask::kCausal, AttnMask::kPadding}) {
    const at::Tensor am = m == AttnMask::kPadding ? mask : at::Tensor();
    EXPECT_TRUE(at::equal(attention_->Forward(q, k, v, m, 0.0, am), attention_->Forward(q, ke, ve, m, 0.0, am)));
  }
  EXPECT_THROW(attention_->Forward(q.narrow(1, 0, 5), k, v, AttnMask::kNone, 0.0), c10::Error);
}

}  // namespace
}  // namespace megatron::transformer
