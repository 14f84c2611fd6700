// The multi-tensor AdamW kernel against the float64 reference on awkward tensor lists (sizes 1, primes, pack and
// chunk boundaries +-1; thousands of tiny tensors; one tensor of 2^24 + 3 elements; unaligned views), every grad
// and copy dtype, three steps; and optimizer::AdamW with fused = true against fused = false on the GPU.
// Skips (GTEST_SKIP) without a CUDA device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "megatron/core/fusions/adam/adam.h"
#include "megatron/core/fusions/adam/adam_test_util.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/cuda_device.h"
#include "megatron/core/optimizer/optimizer.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

const at::Device kCuda(at::kCUDA, 0);

// The kernel computes in float32, the reference in float64 and rounds: params agree to a few float32 ulps
// relative to |p| ~ 1, plus the Adam step's own float32 error (~1e-7 * lr). States: m = 0.9 m + 0.1 g cancels
// terms of up to ~0.5 (|m| ~ 0.1-0.4, |g| up to ~5) into results near 1e-3, so its absolute error scales with the
// terms: a half-ulp of 0.5 is 3e-8 per rounding, a few roundings over three steps ~1e-7. (A first H100 run with
// atol 1e-9 failed on exactly this: m off by up to 2.1e-8 at |m| ~ 1e-3, every param inside kParamTol.)
constexpr Tolerance kParamTol{2e-6, 2e-6};
constexpr Tolerance kStateTol{2e-6, 1e-7};

void ExpectStepsMatch(const std::vector<int64_t>& sizes, at::ScalarType grad_dtype, at::ScalarType copy_dtype,
                      int steps = 3) {
  AdamWTensorLists gpu = testing::MakeLists(sizes, grad_dtype, copy_dtype, kCuda);
  AdamWTensorLists ref = testing::CopyLists(gpu, at::kCPU);
  for (int t = 1; t <= steps; ++t) {
    const AdamWStepParams params{1e-3 * t, 0.9, 0.95, 1e-8, 0.1, t};
    MultiTensorAdamW(gpu, params);
    MultiTensorAdamW(ref, params);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string where = "tensor " + std::to_string(i) + " of " + std::to_string(sizes.size()) + " (" +
                              std::to_string(sizes[i]) + " elements), grad " + testing::DtypeName(grad_dtype) +
                              ", copy " + testing::DtypeName(copy_dtype);
    ASSERT_TRUE(AllClose(gpu.params[i], ref.params[i], kParamTol)) << where;
    ASSERT_TRUE(AllClose(gpu.exp_avgs[i], ref.exp_avgs[i], kStateTol)) << where;
    ASSERT_TRUE(AllClose(gpu.exp_avg_sqs[i], ref.exp_avg_sqs[i], kStateTol)) << where;
    if (copy_dtype != at::kFloat) {
      // The copy is the kernel's own param rounded once.
      ASSERT_TRUE(at::equal(gpu.model_copies[i].cpu(), gpu.params[i].cpu().to(copy_dtype))) << where;
    }
  }
}

TEST(MultiTensorAdamWGpu, AwkwardSizesEveryDtype) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  for (at::ScalarType g : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (at::ScalarType c : {at::kFloat, at::kBFloat16, at::kHalf}) ExpectStepsMatch(testing::AwkwardSizes(), g, c);
  }
}

TEST(MultiTensorAdamWGpu, ThousandsOfTinyTensors) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor sizes = at::randint(1, 40, {3000}, at::kLong);
  std::vector<int64_t> v(sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + sizes.numel());
  ExpectStepsMatch(v, at::kBFloat16, at::kBFloat16);
}

TEST(MultiTensorAdamWGpu, OneHugeTensor) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  ExpectStepsMatch({(int64_t{1} << 24) + 3}, at::kFloat, at::kBFloat16, /*steps=*/1);
}

TEST(MultiTensorAdamWGpu, UnalignedViewsTakeTheScalarPath) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  AdamWTensorLists gpu = testing::MakeLists({1001, 4097}, at::kFloat, at::kBFloat16, kCuda);
  // Replace tensor 1's params with a view one float past a 16-byte boundary (contiguous, not aligned).
  at::Tensor backing = at::randn({4098}, at::TensorOptions().device(kCuda));
  gpu.params[1] = backing.narrow(0, 1, 4097);
  const at::Tensor before = backing.narrow(0, 0, 1).clone();
  AdamWTensorLists ref = testing::CopyLists(gpu, at::kCPU);
  const AdamWStepParams params{1e-3, 0.9, 0.95, 1e-8, 0.1, 1};
  MultiTensorAdamW(gpu, params);
  MultiTensorAdamW(ref, params);
  for (size_t i = 0; i < 2; ++i) ASSERT_TRUE(AllClose(gpu.params[i], ref.params[i], kParamTol)) << i;
  EXPECT_TRUE(at::equal(backing.narrow(0, 0, 1), before)) << "the element before the view was written";
}

TEST(MultiTensorAdamWGpu, OptimizerFusedEqualsUnfused) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  std::vector<std::pair<std::string, at::Tensor>> a, b;
  const std::vector<std::vector<int64_t>> shapes = {{768}, {768, 2304}, {1}, {50257, 64}, {7, 3}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    at::Tensor p = at::randn(shapes[i], at::TensorOptions().device(kCuda));
    a.emplace_back("p" + std::to_string(i), p.clone().set_requires_grad(true));
    b.emplace_back("p" + std::to_string(i), p.clone().set_requires_grad(true));
  }
  optimizer::AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  optimizer::AdamW unfused(a, config);
  config.fused = true;
  optimizer::AdamW fused(b, config);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      at::Tensor g = at::randn(shapes[i], at::TensorOptions().device(kCuda));
      a[i].second.mutable_grad() = g.clone();
      b[i].second.mutable_grad() = g.clone();
    }
    unfused.Step(1e-3);
    fused.Step(1e-3);
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_TRUE(AllClose(b[i].second, a[i].second, kParamTol)) << a[i].first;
  }
}

}  // namespace
}  // namespace megatron::fusions
