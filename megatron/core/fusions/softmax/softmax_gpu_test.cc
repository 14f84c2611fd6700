// GPU tests of the CUDA softmax kernels: every element of y and dx against the float64 reference (softmax.h) for
// the three forms, float32 / bfloat16 / float16, warp-per-row and block-per-row widths, the packed and the scalar
// (odd sk, misaligned) paths, broadcast and per-batch masks, zero rows; and FusedScaleMaskSoftmax taking the
// fused path where the rule allows. Skipped (GTEST_SKIP) without a CUDA device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "megatron/core/fusions/softmax/softmax.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/cuda_device.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::DtypeName;
using testing::ToleranceFor;


const at::Device kCuda(at::kCUDA, 0);

void CheckCase(SoftmaxMask form, at::ScalarType dtype, int64_t b, int64_t np, int64_t sq, int64_t sk,
               int64_t mask_batches, int64_t offset) {
  SCOPED_TRACE(DtypeName(dtype) + " b=" + std::to_string(b) + " np=" + std::to_string(np) + " sq=" +
               std::to_string(sq) + " sk=" + std::to_string(sk) + " form=" + std::to_string(static_cast<int>(form)) +
               " offset=" + std::to_string(offset));
  const int64_t n = b * np * sq * sk;
  // offset > 0: views starting `offset` elements into a buffer, so the base is not 16-byte aligned.
  const at::Tensor xbuf = (at::randn({n + offset}, at::TensorOptions().dtype(dtype)) * 3).to(kCuda);
  const at::Tensor dybuf = at::randn({n + offset}, at::TensorOptions().dtype(dtype)).to(kCuda);
  const at::Tensor x = xbuf.narrow(0, offset, n).view({b, np, sq, sk});
  const at::Tensor dy = dybuf.narrow(0, offset, n).view({b, np, sq, sk});
  at::Tensor mask;
  if (form == SoftmaxMask::kExplicit) {
    mask = (at::randn({mask_batches, 1, sq, sk}) > 0.7).to(kCuda);
    if (sq > 1) mask.select(2, 1).fill_(true);  // one fully masked row per batch: uniform, as the fallback gives
  }
  const SoftmaxParams params{form, 0.37f};
  const at::Tensor y = ScaledMaskedSoftmaxForward(x, mask, params);
  const at::Tensor y_ref =
      ScaledMaskedSoftmaxForwardReference(x.cpu(), mask.defined() ? mask.cpu() : mask, params);
  EXPECT_TRUE(AllClose(y, y_ref, ToleranceFor(dtype)));
  // Backward from the kernel's own y (both sides use the same y).
  const at::Tensor dx = ScaledMaskedSoftmaxBackward(dy, y, params);
  EXPECT_TRUE(AllClose(dx, ScaledMaskedSoftmaxBackwardReference(dy.cpu(), y.cpu(), params), ToleranceFor(dtype)));
}

TEST(SoftmaxCudaTest, KernelsAreRegistered) { EXPECT_TRUE(HasCudaSoftmaxImpl()); }

TEST(SoftmaxCudaTest, MatchesReferenceOnAwkwardShapes) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  struct Shape {
    int64_t b, np, sq, sk;
  };
  // Warp rows (sk <= 1024) and block rows, register-cached (sk <= 4096, packed) and streaming (longer or scalar);
  // sk multiples of the pack and not; causal runs at sq == sk.
  const std::vector<Shape> shapes = {{1, 1, 1, 1}, {2, 3, 5, 5}, {1, 4, 16, 16}, {2, 2, 7, 33},
                                     {1, 2, 64, 64}, {1, 1, 3, 1024}, {1, 1, 1031, 1031}, {1, 2, 2, 2048},
                                     {1, 1, 3, 1032}, {1, 1, 3, 4100}, {1, 1, 2, 4104}};
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const Shape& s : shapes) {
      CheckCase(SoftmaxMask::kNone, dtype, s.b, s.np, s.sq, s.sk, 1, 0);
      CheckCase(SoftmaxMask::kExplicit, dtype, s.b, s.np, s.sq, s.sk, 1, 0);
      CheckCase(SoftmaxMask::kExplicit, dtype, s.b, s.np, s.sq, s.sk, s.b, 0);
      if (s.sk <= 1100) CheckCase(SoftmaxMask::kCausal, dtype, s.b, s.np, s.sk, s.sk, 1, 0);
    }
  }
}

TEST(SoftmaxCudaTest, MisalignedInputsTakeTheScalarPath) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  for (SoftmaxMask form : {SoftmaxMask::kNone, SoftmaxMask::kExplicit, SoftmaxMask::kCausal}) {
    CheckCase(form, at::kBFloat16, 2, 2, 16, 16, 2, 1);
    CheckCase(form, at::kFloat, 1, 1, 1040, 1040, 1, 3);
  }
}

TEST(SoftmaxCudaTest, ZeroRows) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor x = at::empty({0, 2, 4, 4}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda));
  EXPECT_EQ(ScaledMaskedSoftmaxForward(x, at::Tensor(), SoftmaxParams{}).numel(), 0);
  EXPECT_EQ(ScaledMaskedSoftmaxBackward(x, x, SoftmaxParams{}).numel(), 0);
}

TEST(SoftmaxCudaTest, ModuleTakesTheFusedPathWhereAvailable) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  FusedSoftmaxConfig config;
  config.input_in_bf16 = true;
  config.scale = 0.125;
  config.mask = SoftmaxMask::kCausal;
  const at::Tensor x = at::randn({2, 4, 128, 128}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda));
  ASSERT_TRUE(IsFusedSoftmaxAvailable(config, 2, 4, 128, 128));
  const at::Tensor fused = FusedScaleMaskSoftmax(x, at::Tensor(), config);
  // The fused causal kernel gives exact zeros above the diagonal; the fallback's -10000 fill gives exp(-10000
  // - m) = 0 in float32 as well, so the two agree to bf16 rounding.
  EXPECT_TRUE(AllClose(fused, FusedScaleMaskSoftmaxFallback(x, at::Tensor(), config), ToleranceFor(at::kBFloat16)));
  config.mask = SoftmaxMask::kExplicit;
  const at::Tensor mask = (at::randn({2, 1, 128, 128}) > 0.5).to(kCuda);
  EXPECT_TRUE(AllClose(FusedScaleMaskSoftmax(x, mask, config), FusedScaleMaskSoftmaxFallback(x, mask, config),
                       ToleranceFor(at::kBFloat16)));
}

TEST(SoftmaxCudaTest, RejectsFloat64) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor x = at::randn({1, 1, 4, 4}, at::TensorOptions().dtype(at::kDouble).device(kCuda));
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x, at::Tensor(), SoftmaxParams{}), c10::Error);
}

}  // namespace
}  // namespace megatron::fusions
