#include "megatron/core/optimizer/optimizer.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

namespace megatron::optimizer {
namespace {

// Scalar float64 AdamW (the textbook algorithm of Loshchilov & Hutter with Adam's bias corrections).
struct ScalarAdamW {
  double m = 0, v = 0;
  double Step(double p, double g, double lr, int t, const AdamWConfig& c, bool decay) {
    m = c.beta1 * m + (1 - c.beta1) * g;
    v = c.beta2 * v + (1 - c.beta2) * g * g;
    const double mhat = m / (1 - std::pow(c.beta1, t)), vhat = v / (1 - std::pow(c.beta2, t));
    return p - lr * (mhat / (std::sqrt(vhat) + c.eps) + (decay ? c.weight_decay * p : 0.0));
  }
};

TEST(AdamW, MatchesScalarFloat64Reference) {
  AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  at::Tensor w = at::randn({3, 4}, at::kDouble).set_requires_grad(true);
  at::Tensor b = at::randn({4}, at::kDouble).set_requires_grad(true);
  std::vector<double> w_ref(w.data_ptr<double>(), w.data_ptr<double>() + 12);
  std::vector<double> b_ref(b.data_ptr<double>(), b.data_ptr<double>() + 4);
  std::vector<ScalarAdamW> w_state(12), b_state(4);
  AdamW adam({{"w", w}, {"b", b}}, config);
  for (int t = 1; t <= 5; ++t) {
    const double lr = 0.01 * t;
    at::Tensor gw = at::randn({3, 4}, at::kDouble), gb = at::randn({4}, at::kDouble);
    w.mutable_grad() = gw.clone();
    b.mutable_grad() = gb.clone();
    adam.Step(lr);
    for (int i = 0; i < 12; ++i) w_ref[i] = w_state[i].Step(w_ref[i], gw.data_ptr<double>()[i], lr, t, config, true);
    for (int i = 0; i < 4; ++i) b_ref[i] = b_state[i].Step(b_ref[i], gb.data_ptr<double>()[i], lr, t, config, false);
  }
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(w.data_ptr<double>()[i], w_ref[i], 1e-12) << "w[" << i << "]";
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(b.data_ptr<double>()[i], b_ref[i], 1e-12) << "b[" << i << "] (no decay)";
  EXPECT_EQ(adam.step_count(), 5);
}

TEST(AdamW, StateDictRoundTripContinuesIdentically) {
  AdamWConfig config;
  at::Tensor p1 = at::randn({5, 2}).set_requires_grad(true);
  at::Tensor p2 = p1.detach().clone().set_requires_grad(true);
  AdamW a({{"p", p1}}, config), b({{"p", p2}}, config);
  at::Tensor g = at::randn({5, 2});
  p1.mutable_grad() = g.clone();
  a.Step(0.1);
  ASSERT_TRUE(b.LoadStateDict(a.StateDict()).ok());
  p2.detach().copy_(p1.detach());
  p1.mutable_grad() = g.clone();
  p2.mutable_grad() = g.clone();
  a.Step(0.1);
  b.Step(0.1);
  EXPECT_TRUE(p1.equal(p2));
  auto bad = a.StateDict();
  bad.erase("exp_avg.p");
  absl::Status s = b.LoadStateDict(bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("exp_avg.p"), std::string::npos);
}

// fused = true (one multi-tensor call; on CPU its float64 reference) is the same update as the per-tensor loop,
// including which tensors decay and skipping parameters without a gradient.
TEST(AdamW, FusedEqualsUnfused) {
  std::vector<std::pair<std::string, at::Tensor>> a, b;
  const std::vector<std::vector<int64_t>> shapes = {{5}, {3, 4}, {1}, {2, 7}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    at::Tensor p = at::randn(shapes[i]);
    a.emplace_back("p" + std::to_string(i), p.clone().set_requires_grad(true));
    b.emplace_back("p" + std::to_string(i), p.clone().set_requires_grad(true));
  }
  AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  AdamW unfused(a, config);
  config.fused = true;
  AdamW fused(b, config);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (step == 1 && i == 2) continue;  // no gradient this step: skipped by both
      at::Tensor g = at::randn(shapes[i]);
      a[i].second.mutable_grad() = g.clone();
      b[i].second.mutable_grad() = g.clone();
    }
    unfused.Step(1e-2);
    fused.Step(1e-2);
    unfused.ZeroGrad();
    fused.ZeroGrad();
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_TRUE(at::allclose(b[i].second, a[i].second, 1e-6, 1e-7)) << a[i].first;
  }
}

TEST(ClipGradNorm, ScalesToMaxNorm) {
  at::Tensor a = at::zeros({2}).set_requires_grad(true), b = at::zeros({1}).set_requires_grad(true);
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(ClipGradNorm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(b.grad()[0].item<float>(), 4.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(ClipGradNorm({a, b}, 10.0), 1.0, 1e-5);  // below max: untouched
  EXPECT_NEAR(b.grad()[0].item<float>(), 4.0 / (5.0 + 1e-6), 1e-6);
}

TEST(LrSchedule, WarmupThenCosine) {
  LrSchedule s{1.0, 0.1, 10, 110, LrDecay::kCosine};
  EXPECT_DOUBLE_EQ(s.LearningRate(0), 0.0);  // Megatron starts at 0 with warmup
  EXPECT_DOUBLE_EQ(s.LearningRate(5), 0.5);
  EXPECT_DOUBLE_EQ(s.LearningRate(10), 1.0);
  EXPECT_NEAR(s.LearningRate(60), 0.1 + 0.9 * 0.5, 1e-12);  // halfway: cos(pi/2) = 0
  EXPECT_NEAR(s.LearningRate(110), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(s.LearningRate(500), 0.1);
  LrSchedule lin{1.0, 0.0, 0, 100, LrDecay::kLinear};
  EXPECT_NEAR(lin.LearningRate(25), 0.75, 1e-12);
}

}  // namespace
}  // namespace megatron::optimizer
