// GPU tests of the CUDA bias + activation kernels: every element of y, dx and dbias against the float64 reference
// for GeLU (tanh, erf) and SwiGLU, float32 / bfloat16 / float16, with and without bias, packed and scalar (odd
// widths, misaligned views) paths, leading dimensions, zero rows. Skipped (GTEST_SKIP) without a CUDA device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "megatron/core/fusions/activation/activation.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/cuda_device.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::DtypeName;
using testing::Tolerance;
using testing::ToleranceFor;


const at::Device kCuda(at::kCUDA, 0);

void CheckCase(ActivationKind kind, at::ScalarType dtype, std::vector<int64_t> sizes, bool with_bias,
               int64_t offset) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  SCOPED_TRACE(DtypeName(dtype) + " n=" + std::to_string(n) + " cols=" + std::to_string(sizes.back()) +
               " kind=" + std::to_string(static_cast<int>(kind)) + " bias=" + std::to_string(with_bias) +
               " offset=" + std::to_string(offset));
  const at::Tensor xbuf = (at::randn({n + offset}, at::TensorOptions().dtype(dtype)) * 2).to(kCuda);
  const at::Tensor x = xbuf.narrow(0, offset, n).view(sizes);
  const at::Tensor bias =
      with_bias ? at::randn({sizes.back()}, at::TensorOptions().dtype(dtype)).to(kCuda) : at::Tensor();
  const at::Tensor y = BiasActivationForward(x, bias, kind);
  const at::Tensor xc = x.cpu();
  const at::Tensor bc = bias.defined() ? bias.cpu() : bias;
  EXPECT_TRUE(AllClose(y, BiasActivationForwardReference(xc, bc, kind), ToleranceFor(dtype)));
  const at::Tensor dybuf = at::randn({y.numel() + offset}, at::TensorOptions().dtype(dtype)).to(kCuda);
  const at::Tensor dy = dybuf.narrow(0, offset, y.numel()).view(y.sizes());
  const ActivationBackwardResult got = BiasActivationBackward(dy, x, bias, kind);
  const ActivationBackwardResult want = BiasActivationBackwardReference(dy.cpu(), xc, bc, kind);
  EXPECT_TRUE(AllClose(got.dx, want.dx, ToleranceFor(dtype)));
  if (with_bias) {
    // A sum over rows of rounded dx: tolerance scaled by the number of rows summed.
    const Tolerance t = ToleranceFor(dtype);
    const double rows = static_cast<double>(n / sizes.back());
    EXPECT_TRUE(AllClose(got.dbias, want.dbias, Tolerance{t.rtol, t.atol * std::max(1.0, std::sqrt(rows))}));
  }
}

TEST(ActivationCudaTest, KernelsAreRegistered) { EXPECT_TRUE(HasCudaActivationImpl()); }

TEST(ActivationCudaTest, MatchesReferenceOnAwkwardShapes) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<std::vector<int64_t>> shapes = {{1, 2}, {3, 16}, {5, 2, 64}, {257, 48}, {7, 4098}, {2, 3, 30}};
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& s : shapes) {
      for (ActivationKind kind : {ActivationKind::kGeluTanh, ActivationKind::kGeluErf, ActivationKind::kSwiGLU}) {
        CheckCase(kind, dtype, s, /*with_bias=*/true, 0);
        CheckCase(kind, dtype, s, /*with_bias=*/false, 0);
      }
    }
  }
}

TEST(ActivationCudaTest, MisalignedInputsTakeTheScalarPath) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  for (ActivationKind kind : {ActivationKind::kGeluTanh, ActivationKind::kGeluErf, ActivationKind::kSwiGLU}) {
    CheckCase(kind, at::kBFloat16, {9, 32}, true, 1);
    CheckCase(kind, at::kFloat, {9, 32}, false, 3);
  }
}

TEST(ActivationCudaTest, ZeroRows) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor x = at::empty({0, 8}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda));
  EXPECT_EQ(BiasActivationForward(x, at::Tensor(), ActivationKind::kSwiGLU).sizes(), (at::IntArrayRef{0, 4}));
  EXPECT_EQ(BiasActivationBackward(x, x, at::Tensor(), ActivationKind::kGeluTanh).dx.numel(), 0);
}

}  // namespace
}  // namespace megatron::fusions
