// The multi-tensor AdamW reference (the CPU path of MultiTensorAdamW) against optimizer::AdamW run in float64 (an
// independent implementation of the same update, itself tested against a scalar recomputation of Megatron's
// FusedAdam formula in optimizer_test.cc), plus the model copy and the input checks.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "megatron/core/fusions/adam/adam.h"
#include "megatron/core/fusions/adam/adam_test_util.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/optimizer/optimizer.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

// Shapes with both 1-D (no decay in AdamW) and 2-D (decay) parameters, including size-1 and prime dimensions.
std::vector<std::vector<int64_t>> Shapes() { return {{1}, {7}, {3, 5}, {1, 1}, {13, 17}, {127}, {2, 4099}}; }

TEST(AdamWReference, MatchesOptimizerAdamWInFloat64OverSteps) {
  optimizer::AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  std::vector<std::pair<std::string, at::Tensor>> named;
  AdamWTensorLists ours;
  for (size_t i = 0; i < Shapes().size(); ++i) {
    at::Tensor p = at::randn(Shapes()[i], at::kDouble);
    named.emplace_back("p" + std::to_string(i), p.clone().set_requires_grad(true));
    ours.params.push_back(p.clone());
    ours.exp_avgs.push_back(at::zeros_like(p));
    ours.exp_avg_sqs.push_back(at::zeros_like(p));
    ours.decay.push_back(p.dim() > 1 ? 1 : 0);  // what AdamW does
  }
  optimizer::AdamW adam(named, config);
  const std::vector<double> lrs = {1e-3, 3e-3, 5e-4, 2e-3};
  for (size_t step = 0; step < lrs.size(); ++step) {
    ours.grads.clear();
    for (auto& [name, p] : named) {
      at::Tensor g = at::randn(p.sizes(), at::kDouble) * (step + 1.0);
      p.mutable_grad() = g;
      ours.grads.push_back(g.clone());
    }
    adam.Step(lrs[step]);
    AdamWStepParams params{lrs[step], config.beta1, config.beta2, config.eps, config.weight_decay,
                           static_cast<int64_t>(step + 1)};
    MultiTensorAdamW(ours, params);  // CPU tensors: the reference
    for (size_t i = 0; i < named.size(); ++i) {
      EXPECT_TRUE(AllClose(ours.params[i], named[i].second.detach(), Tolerance{1e-12, 1e-14}))
          << "step " << step + 1 << " tensor " << i;
    }
  }
  const auto state = adam.StateDict();
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_TRUE(AllClose(ours.exp_avgs[i], state.at("exp_avg." + named[i].first), Tolerance{1e-12, 1e-14}));
    EXPECT_TRUE(AllClose(ours.exp_avg_sqs[i], state.at("exp_avg_sq." + named[i].first), Tolerance{1e-12, 1e-14}));
  }
}

// float32 master weights with bf16/fp16 grads: the reference computes in float64 and rounds once, so it equals the
// float64 run rounded to float32 (within one float32 ulp), and the copy equals the updated params rounded.
TEST(AdamWReference, Float32StatesLowPrecisionGradsAndCopies) {
  for (at::ScalarType grad_dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (at::ScalarType copy_dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      AdamWTensorLists l = testing::MakeLists(testing::AwkwardSizes(), grad_dtype, copy_dtype, at::kCPU);
      AdamWTensorLists wide = testing::CopyLists(l, at::kCPU, /*float64_states=*/true);
      wide.model_copies.clear();
      const AdamWStepParams params{1e-3, 0.9, 0.999, 1e-8, 0.05, 3};
      MultiTensorAdamW(l, params);
      MultiTensorAdamW(wide, params);
      for (size_t i = 0; i < l.params.size(); ++i) {
        EXPECT_TRUE(AllClose(l.params[i], wide.params[i], Tolerance{1e-7, 1e-7})) << i;
        EXPECT_TRUE(AllClose(l.exp_avgs[i], wide.exp_avgs[i], Tolerance{1e-7, 1e-9})) << i;
        EXPECT_TRUE(AllClose(l.exp_avg_sqs[i], wide.exp_avg_sqs[i], Tolerance{1e-7, 1e-12})) << i;
        if (copy_dtype != at::kFloat) {
          EXPECT_TRUE(at::equal(l.model_copies[i], l.params[i].to(copy_dtype))) << i;
        }
      }
    }
  }
}

TEST(AdamWReference, DecayFlagOnlyScalesFlaggedTensors) {
  // Zero grads and states: the Adam term is 0, so only decay moves the params, by exactly 1 - lr wd.
  AdamWTensorLists l;
  for (int i = 0; i < 2; ++i) {
    l.params.push_back(at::ones({5}, at::kDouble));
    l.grads.push_back(at::zeros({5}, at::kDouble));
    l.exp_avgs.push_back(at::zeros({5}, at::kDouble));
    l.exp_avg_sqs.push_back(at::zeros({5}, at::kDouble));
    l.decay.push_back(i == 0 ? 1 : 0);
  }
  MultiTensorAdamW(l, AdamWStepParams{0.5, 0.9, 0.95, 1e-8, 0.1, 1});
  EXPECT_TRUE(AllClose(l.params[0], at::full({5}, 0.95, at::kDouble), Tolerance{0, 1e-15}));
  EXPECT_TRUE(AllClose(l.params[1], at::ones({5}, at::kDouble), Tolerance{0, 0}));
}

TEST(AdamWChecks, RejectsMismatchedLists) {
  AdamWTensorLists l = testing::MakeLists({3, 4}, at::kFloat, at::kFloat, at::kCPU);
  const AdamWStepParams params;
  {
    AdamWTensorLists bad = l;
    bad.decay.pop_back();
    EXPECT_THROW(MultiTensorAdamW(bad, params), c10::Error);
  }
  {
    AdamWTensorLists bad = l;
    bad.grads[1] = at::zeros({5});
    EXPECT_THROW(MultiTensorAdamW(bad, params), c10::Error);
  }
  {
    AdamWTensorLists bad = l;
    bad.grads[1] = bad.grads[1].to(at::kBFloat16);  // mixed grad dtypes
    EXPECT_THROW(MultiTensorAdamW(bad, params), c10::Error);
  }
  {
    AdamWTensorLists bad = l;
    bad.exp_avgs[0] = bad.exp_avgs[0].to(at::kBFloat16);  // states must be float32
    EXPECT_THROW(MultiTensorAdamW(bad, params), c10::Error);
  }
  {
    AdamWTensorLists bad = l;
    bad.model_copies = {at::zeros({3}, at::kFloat), at::zeros({4}, at::kFloat)};  // copies must be bf16/fp16
    EXPECT_THROW(MultiTensorAdamW(bad, params), c10::Error);
  }
  {
    AdamWTensorLists bad = l;
    bad.params[0] = at::zeros({6}).view({3, 2}).select(1, 0);  // 3 elements, stride 2
    EXPECT_THROW(MultiTensorAdamW(bad, params), c10::Error);
  }
}

}  // namespace
}  // namespace megatron::fusions
