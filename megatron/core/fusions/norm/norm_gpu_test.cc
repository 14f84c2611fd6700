// GPU tests of the CUDA norm kernels (norm_kernel.cu through norm_cuda.cc): every element of y, mean, rstd, dx,
// dgamma and dbeta against the float64 reference (norm_reference.cc) on the same inputs, for both norms, every
// x dtype, float32 and x-dtype gamma, awkward shapes, misaligned (scalar-path) inputs and zero rows; the residual
// add + norm (y, h, statistics; dx with and without an incoming dh) the same way. Skipped when the machine has no
// CUDA device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "megatron/core/fusions/norm/norm.h"
#include "megatron/core/fusions/norm/norm_test_util.h"
#include "megatron/core/fusions/testing/cuda_device.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::RandomInput;
using testing::ToleranceFor;

constexpr double kEps = 1e-5;


const at::Device kCuda(at::kCUDA, 0);

struct Case {
  NormKind kind;
  at::ScalarType dtype;
  at::ScalarType gamma_dtype;
  int64_t rows;
  int64_t hidden;
  bool zero_centered;
  bool with_beta;
  bool misaligned;  // x and dy start one element past a 16-byte boundary: the scalar (1-element pack) path
};

std::string Describe(const Case& c) {
  return std::string(c.kind == NormKind::kLayerNorm ? "LayerNorm" : "RMSNorm") + " " +
         testing::DtypeName(c.dtype) + " gamma " + testing::DtypeName(c.gamma_dtype) + " rows " +
         std::to_string(c.rows) + " hidden " + std::to_string(c.hidden) + (c.zero_centered ? " zero-centred" : "") +
         (c.with_beta ? "" : " no-beta") + (c.misaligned ? " misaligned" : "");
}

// A contiguous CUDA copy of `cpu`, optionally starting one element into its allocation.
at::Tensor ToCuda(const at::Tensor& cpu, bool misaligned) {
  if (!misaligned) return cpu.to(kCuda);
  at::Tensor storage = at::empty({cpu.numel() + 1}, cpu.options().device(kCuda));
  at::Tensor view = storage.narrow(0, 1, cpu.numel()).view(cpu.sizes());
  view.copy_(cpu);
  return view;
}

void RunCase(const Case& c, uint64_t seed) {
  SCOPED_TRACE(Describe(c));
  const NormParams params{c.kind, kEps, c.zero_centered};
  const at::Tensor x = RandomInput({c.rows, c.hidden}, seed, /*offset=*/1.5).to(c.dtype);
  const at::Tensor dy = RandomInput({c.rows, c.hidden}, seed + 1).to(c.dtype);
  const at::Tensor gamma = RandomInput({c.hidden}, seed + 2).to(c.gamma_dtype);
  const at::Tensor beta = c.kind == NormKind::kLayerNorm && c.with_beta
                              ? RandomInput({c.hidden}, seed + 3).to(c.gamma_dtype)
                              : at::Tensor();

  const NormForwardResult ref = NormForwardReference(x, gamma, beta, params);
  const at::Tensor x_cuda = ToCuda(x, c.misaligned);
  const at::Tensor gamma_cuda = gamma.to(kCuda);
  const at::Tensor beta_cuda = beta.defined() ? beta.to(kCuda) : at::Tensor();
  const NormForwardResult got = NormForward(x_cuda, gamma_cuda, beta_cuda, params);
  ASSERT_TRUE(got.y.is_cuda());
  EXPECT_TRUE(AllClose(got.y, ref.y, ToleranceFor(c.dtype))) << "y";
  EXPECT_TRUE(AllClose(got.rstd, ref.rstd, ToleranceFor(at::kFloat))) << "rstd";
  if (c.kind == NormKind::kLayerNorm) {
    EXPECT_TRUE(AllClose(got.mean, ref.mean, ToleranceFor(at::kFloat))) << "mean";
  }

  // Backward from the reference's statistics on both sides, so only the backward kernels are compared.
  const NormBackwardResult ref_grads = NormBackwardReference(dy, x, gamma, ref.mean, ref.rstd, params);
  const NormBackwardResult got_grads =
      NormBackward(ToCuda(dy, c.misaligned), x_cuda, gamma_cuda, ref.mean.defined() ? ref.mean.to(kCuda) : at::Tensor(),
                   ref.rstd.to(kCuda), params);
  // dx is rounded to x's dtype; dgamma/dbeta are float32 sums of rounded inputs when gamma is float32, so x's
  // (looser or equal) tolerance covers both.
  EXPECT_TRUE(AllClose(got_grads.dx, ref_grads.dx, ToleranceFor(c.dtype))) << "dx";
  EXPECT_TRUE(AllClose(got_grads.dgamma, ref_grads.dgamma, ToleranceFor(c.dtype))) << "dgamma";
  if (c.kind == NormKind::kLayerNorm) {
    EXPECT_TRUE(AllClose(got_grads.dbeta, ref_grads.dbeta, ToleranceFor(c.dtype))) << "dbeta";
  }
}

// The residual add + norm: y, h and the statistics against the reference's unfused add + norm, and the backward
// (from the reference's h and statistics, with and without dh) against the reference's.
void RunResidualCase(const Case& c, uint64_t seed) {
  SCOPED_TRACE("residual add + " + Describe(c));
  const NormParams params{c.kind, kEps, c.zero_centered};
  const at::Tensor x = RandomInput({c.rows, c.hidden}, seed, /*offset=*/1.5).to(c.dtype);
  const at::Tensor residual = RandomInput({c.rows, c.hidden}, seed + 1).to(c.dtype);
  const at::Tensor dy = RandomInput({c.rows, c.hidden}, seed + 2).to(c.dtype);
  const at::Tensor dh = RandomInput({c.rows, c.hidden}, seed + 3).to(c.dtype);
  const at::Tensor gamma = RandomInput({c.hidden}, seed + 4).to(c.gamma_dtype);
  const at::Tensor beta = c.kind == NormKind::kLayerNorm && c.with_beta
                              ? RandomInput({c.hidden}, seed + 5).to(c.gamma_dtype)
                              : at::Tensor();
  const NormForwardResult ref = ResidualAddNormForwardReference(x, residual, gamma, beta, params);
  const at::Tensor gamma_cuda = gamma.to(kCuda);
  const at::Tensor beta_cuda = beta.defined() ? beta.to(kCuda) : at::Tensor();
  const NormForwardResult got =
      ResidualAddNormForward(ToCuda(x, c.misaligned), ToCuda(residual, c.misaligned), gamma_cuda, beta_cuda, params);
  ASSERT_TRUE(got.h.defined() && got.h.is_cuda());
  // h is one float32 add rounded to the dtype on both sides: equal up to a (rare) double-rounding ulp.
  EXPECT_TRUE(AllClose(got.h, ref.h, ToleranceFor(c.dtype))) << "h";
  EXPECT_TRUE(AllClose(got.y, ref.y, ToleranceFor(c.dtype))) << "y";
  EXPECT_TRUE(AllClose(got.rstd, ref.rstd, ToleranceFor(at::kFloat))) << "rstd";
  if (c.kind == NormKind::kLayerNorm) {
    EXPECT_TRUE(AllClose(got.mean, ref.mean, ToleranceFor(at::kFloat))) << "mean";
  }

  const at::Tensor mean_cuda = ref.mean.defined() ? ref.mean.to(kCuda) : at::Tensor();
  const at::Tensor h_cuda = ToCuda(ref.h, c.misaligned);
  for (bool with_dh : {true, false}) {
    SCOPED_TRACE(with_dh ? "with dh" : "without dh");
    const at::Tensor dh_ref = with_dh ? dh : at::Tensor();
    const NormBackwardResult want =
        ResidualAddNormBackwardReference(dy, dh_ref, ref.h, gamma, ref.mean, ref.rstd, params);
    const NormBackwardResult grads =
        ResidualAddNormBackward(ToCuda(dy, c.misaligned), with_dh ? ToCuda(dh, c.misaligned) : at::Tensor(), h_cuda,
                                gamma_cuda, mean_cuda, ref.rstd.to(kCuda), params);
    EXPECT_TRUE(AllClose(grads.dx, want.dx, ToleranceFor(c.dtype))) << "dx";
    EXPECT_TRUE(AllClose(grads.dgamma, want.dgamma, ToleranceFor(c.dtype))) << "dgamma";
    if (c.kind == NormKind::kLayerNorm) {
      EXPECT_TRUE(AllClose(grads.dbeta, want.dbeta, ToleranceFor(c.dtype))) << "dbeta";
    }
  }
}

TEST(NormCudaTest, KernelsAreRegistered) {
  EXPECT_TRUE(HasCudaNormImpl()) << "norm_cuda's static registration did not run (alwayslink missing?)";
}

TEST(NormCudaTest, MatchesReferenceOnAwkwardShapes) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  uint64_t seed = 1000;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (at::ScalarType gamma_dtype : {at::kFloat, dtype}) {
        for (int64_t hidden : testing::AwkwardHiddens()) {
          for (int64_t rows : testing::AwkwardRows()) {
            RunCase({kind, dtype, gamma_dtype, rows, hidden, /*zero_centered=*/hidden == 127, /*with_beta=*/true,
                     /*misaligned=*/false},
                    seed);
            seed += 4;
          }
        }
        if (dtype == at::kFloat) break;  // float32 gamma is x's dtype: one sweep
      }
    }
  }
}

TEST(NormCudaTest, MisalignedInputsTakeTheScalarPath) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  uint64_t seed = 5000;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (int64_t hidden : {128, 4096}) {  // pack multiples, so only the pointer offset forces the scalar path
        RunCase({kind, dtype, dtype, 33, hidden, false, true, /*misaligned=*/true}, seed);
        seed += 4;
      }
    }
  }
}

TEST(NormCudaTest, LayerNormWithoutBetaAndManyRows) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  // 2048 rows: several row chunks per column block in the dgamma/dbeta reduction.
  RunCase({NormKind::kLayerNorm, at::kBFloat16, at::kFloat, 2048, 1024, false, /*with_beta=*/false, false}, 7000);
  RunCase({NormKind::kRMSNorm, at::kBFloat16, at::kBFloat16, 2048, 4096, true, false, false}, 7010);
}

TEST(NormCudaTest, ResidualAddMatchesReference) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  uint64_t seed = 9000;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (int64_t hidden : testing::AwkwardHiddens()) {
        for (int64_t rows : testing::AwkwardRows()) {
          RunResidualCase({kind, dtype, at::kFloat, rows, hidden, /*zero_centered=*/hidden == 129,
                           /*with_beta=*/true, /*misaligned=*/false},
                          seed);
          seed += 6;
        }
      }
      // Misaligned residual, h and gradients: the scalar path; and the block-per-row path with x-dtype gamma.
      RunResidualCase({kind, dtype, dtype, 33, 4096, false, true, /*misaligned=*/true}, seed);
      RunResidualCase({kind, dtype, dtype, 2048, 4096, true, false, false}, seed + 6);
      seed += 12;
    }
  }
}

TEST(NormCudaTest, ZeroRowsGiveZeroGradients) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor x = at::empty({0, 64}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda));
  const at::Tensor gamma = RandomInput({64}, 1).to(kCuda);
  const at::Tensor beta = RandomInput({64}, 2).to(kCuda);
  const NormParams params{NormKind::kLayerNorm, kEps, false};
  const NormForwardResult fwd = NormForward(x, gamma, beta, params);
  EXPECT_EQ(fwd.y.numel(), 0);
  const NormBackwardResult bwd = NormBackward(x, x, gamma, fwd.mean, fwd.rstd, params);
  EXPECT_TRUE(AllClose(bwd.dgamma, at::zeros_like(gamma), ToleranceFor(at::kFloat)));
  EXPECT_TRUE(AllClose(bwd.dbeta, at::zeros_like(beta), ToleranceFor(at::kFloat)));
}

TEST(NormCudaTest, RejectsFloat64) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor x = RandomInput({2, 8}, 3).to(at::kDouble).to(kCuda);
  const at::Tensor gamma = RandomInput({8}, 4).to(at::kDouble).to(kCuda);
  EXPECT_THROW(NormForward(x, gamma, at::Tensor(), {NormKind::kRMSNorm, kEps, false}), c10::Error);
}

}  // namespace
}  // namespace megatron::fusions
