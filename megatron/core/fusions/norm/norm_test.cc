// CPU tests of the norm contract: the float64 reference against ATen's own layer_norm and an RMSNorm formula,
// backward against finite differences (float64) and against autograd through the ATen composite, on awkward shapes
// and every supported dtype; the residual add + norm against the unfused add followed by the norm, and its
// backward against finite differences; plus input checks and dispatch. The CUDA kernels are tested in norm_gpu_test.cc.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/add.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "megatron/core/fusions/norm/norm.h"
#include "megatron/core/fusions/norm/norm_test_util.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::AwkwardHiddens;
using testing::AwkwardRows;
using testing::RandomInput;
using testing::ToleranceFor;

constexpr double kEps = 1e-5;

const std::vector<at::ScalarType>& Dtypes() {
  static const std::vector<at::ScalarType> dtypes = {at::kFloat, at::kBFloat16, at::kHalf};
  return dtypes;
}

std::string Where(NormKind kind, int64_t rows, int64_t hidden, at::ScalarType dtype) {
  return std::string(kind == NormKind::kLayerNorm ? "LayerNorm" : "RMSNorm") + " rows " + std::to_string(rows) +
         " hidden " + std::to_string(hidden) + " " + testing::DtypeName(dtype);
}

// The ATen composite in float64 (autograd-capable): at::layer_norm, or the RMSNorm formula.
at::Tensor Composite64(const at::Tensor& x64, const at::Tensor& g64, const at::Tensor& b64, NormKind kind,
                       bool zero_centered) {
  const at::Tensor g = zero_centered ? g64 + 1.0 : g64;
  if (kind == NormKind::kLayerNorm) return at::layer_norm(x64, {x64.size(-1)}, g, b64, kEps);
  return x64 * at::rsqrt((x64 * x64).mean({-1}, /*keepdim=*/true) + kEps) * g;
}

TEST(NormReferenceTest, LayerNormMatchesAten) {
  uint64_t seed = 1;
  for (at::ScalarType dtype : Dtypes()) {
    for (int64_t hidden : AwkwardHiddens()) {
      for (int64_t rows : AwkwardRows()) {
        SCOPED_TRACE(Where(NormKind::kLayerNorm, rows, hidden, dtype));
        const at::Tensor x = RandomInput({rows, hidden}, seed++, /*offset=*/3.0).to(dtype);
        const at::Tensor gamma = RandomInput({hidden}, seed++).to(dtype);
        const at::Tensor beta = RandomInput({hidden}, seed++).to(dtype);
        const NormForwardResult out = NormForwardReference(x, gamma, beta, {NormKind::kLayerNorm, kEps, false});
        // ATen's float32 kernel on the same (already rounded) inputs, rounded to dtype like the reference's y.
        const at::Tensor expected =
            at::layer_norm(x.to(at::kFloat), {hidden}, gamma.to(at::kFloat), beta.to(at::kFloat), kEps).to(dtype);
        EXPECT_TRUE(AllClose(out.y, expected, ToleranceFor(dtype)));
        const at::Tensor x64 = x.to(at::kDouble);
        EXPECT_TRUE(AllClose(out.mean, x64.mean({-1}), ToleranceFor(at::kFloat)));
        EXPECT_EQ(out.y.scalar_type(), dtype);
        EXPECT_EQ(out.mean.scalar_type(), at::kFloat);
        EXPECT_EQ(out.rstd.scalar_type(), at::kFloat);
        EXPECT_EQ(out.rstd.sizes(), at::IntArrayRef({rows}));
      }
    }
  }
}

TEST(NormReferenceTest, RmsNormMatchesFormula) {
  uint64_t seed = 100;
  for (at::ScalarType dtype : Dtypes()) {
    for (int64_t hidden : AwkwardHiddens()) {
      for (int64_t rows : AwkwardRows()) {
        SCOPED_TRACE(Where(NormKind::kRMSNorm, rows, hidden, dtype));
        const at::Tensor x = RandomInput({rows, hidden}, seed++).to(dtype);
        const at::Tensor gamma = RandomInput({hidden}, seed++).to(dtype);
        const NormForwardResult out = NormForwardReference(x, gamma, at::Tensor(), {NormKind::kRMSNorm, kEps, false});
        const at::Tensor x64 = x.to(at::kDouble);
        const at::Tensor rstd = at::rsqrt((x64 * x64).mean({-1}) + kEps);
        const at::Tensor expected = (x64 * rstd.unsqueeze(-1) * gamma.to(at::kDouble)).to(dtype);
        EXPECT_TRUE(AllClose(out.y, expected, ToleranceFor(dtype)));
        EXPECT_TRUE(AllClose(out.rstd, rstd, ToleranceFor(at::kFloat)));
        EXPECT_FALSE(out.mean.defined());
      }
    }
  }
}

TEST(NormReferenceTest, ZeroCenteredGammaIsOnePlusGamma) {
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    const at::Tensor x = RandomInput({5, 33}, 7, 1.0);
    const at::Tensor gamma = RandomInput({33}, 8) * 0.1;
    const at::Tensor beta = kind == NormKind::kLayerNorm ? RandomInput({33}, 9) : at::Tensor();
    const at::Tensor a = NormForwardReference(x, gamma, beta, {kind, kEps, true}).y;
    const at::Tensor b = NormForwardReference(x, gamma + 1.0, beta, {kind, kEps, false}).y;
    EXPECT_TRUE(AllClose(a, b, ToleranceFor(at::kFloat)));
  }
}

// dL/dx, dL/dgamma, dL/dbeta for L = sum(y * w), by central differences in float64 on a few elements.
TEST(NormReferenceTest, BackwardMatchesFiniteDifferences) {
  constexpr int64_t kRows = 3;
  constexpr int64_t kHidden = 7;
  constexpr double kStep = 1e-6;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (bool zero_centered : {false, true}) {
      SCOPED_TRACE(std::string(kind == NormKind::kLayerNorm ? "LayerNorm" : "RMSNorm") +
                   (zero_centered ? " zero-centred" : ""));
      const NormParams params{kind, kEps, zero_centered};
      at::Tensor x = RandomInput({kRows, kHidden}, 21, 0.5).to(at::kDouble);
      at::Tensor gamma = RandomInput({kHidden}, 22).to(at::kDouble);
      at::Tensor beta = kind == NormKind::kLayerNorm ? RandomInput({kHidden}, 23).to(at::kDouble) : at::Tensor();
      const at::Tensor w = RandomInput({kRows, kHidden}, 24).to(at::kDouble);
      auto loss = [&] { return (NormForwardReference(x, gamma, beta, params).y * w).sum().item<double>(); };

      const NormForwardResult fwd = NormForwardReference(x, gamma, beta, params);
      const NormBackwardResult grads = NormBackwardReference(w, x, gamma, fwd.mean, fwd.rstd, params);
      ASSERT_EQ(grads.dx.scalar_type(), at::kDouble);
      ASSERT_EQ(grads.dbeta.defined(), kind == NormKind::kLayerNorm);

      auto check = [&](at::Tensor& param, const at::Tensor& analytic, int64_t flat) {
        double* p = param.data_ptr<double>() + flat;
        const double saved = *p;
        *p = saved + kStep;
        const double up = loss();
        *p = saved - kStep;
        const double down = loss();
        *p = saved;
        const double numeric = (up - down) / (2 * kStep);
        const double got = analytic.reshape({-1})[flat].item<double>();
        EXPECT_NEAR(got, numeric, 1e-6 + 1e-6 * std::abs(numeric)) << "element " << flat;
      };
      for (int64_t flat : {0L, 8L, 20L}) check(x, grads.dx, flat);
      for (int64_t flat : {0L, 3L, 6L}) check(gamma, grads.dgamma, flat);
      if (beta.defined()) {
        for (int64_t flat : {1L, 5L}) check(beta, grads.dbeta, flat);
      }
    }
  }
}

// Reference backward (inputs in dtype, statistics from its own forward) against autograd through the float64
// ATen composite on the same rounded inputs.
TEST(NormReferenceTest, BackwardMatchesAutogradOfComposite) {
  uint64_t seed = 300;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (at::ScalarType dtype : Dtypes()) {
      for (int64_t hidden : AwkwardHiddens()) {
        for (int64_t rows : AwkwardRows()) {
          SCOPED_TRACE(Where(kind, rows, hidden, dtype));
          const bool zero_centered = hidden == 129;  // one shape per sweep exercises the 1 + gamma path
          const NormParams params{kind, kEps, zero_centered};
          const at::Tensor x = RandomInput({rows, hidden}, seed++, 1.0).to(dtype);
          const at::Tensor dy = RandomInput({rows, hidden}, seed++).to(dtype);
          const at::Tensor gamma = RandomInput({hidden}, seed++).to(dtype);
          const at::Tensor beta = kind == NormKind::kLayerNorm ? RandomInput({hidden}, seed++).to(dtype)
                                                               : at::Tensor();
          const NormForwardResult fwd = NormForwardReference(x, gamma, beta, params);
          const NormBackwardResult got = NormBackwardReference(dy, x, gamma, fwd.mean, fwd.rstd, params);

          at::Tensor x64 = x.to(at::kDouble).set_requires_grad(true);
          at::Tensor g64 = gamma.to(at::kDouble).set_requires_grad(true);
          at::Tensor b64 = beta.defined() ? beta.to(at::kDouble).set_requires_grad(true) : at::Tensor();
          Composite64(x64, g64, b64, kind, zero_centered).backward(dy.to(at::kDouble));
          // dx and dgamma are rounded to dtype; the reference used float32 statistics, whose rounding (~6e-8
          // relative) is far inside every tolerance here.
          EXPECT_TRUE(AllClose(got.dx, x64.grad().to(dtype), ToleranceFor(dtype)));
          EXPECT_TRUE(AllClose(got.dgamma, g64.grad().to(dtype), ToleranceFor(dtype)));
          if (kind == NormKind::kLayerNorm) {
            EXPECT_TRUE(AllClose(got.dbeta, b64.grad().to(dtype), ToleranceFor(dtype)));
          }
        }
      }
    }
  }
}

TEST(NormReferenceTest, LeadingDimensionsAndFloat32Gamma) {
  const at::Tensor x = RandomInput({2, 3, 16}, 40).to(at::kBFloat16);
  const at::Tensor gamma = RandomInput({16}, 41);  // float32 gamma with bfloat16 x
  const at::Tensor beta = RandomInput({16}, 42);
  const NormParams params{NormKind::kLayerNorm, kEps, false};
  const NormForwardResult fwd = NormForward(x, gamma, beta, params);
  EXPECT_EQ(fwd.y.sizes(), x.sizes());
  EXPECT_EQ(fwd.y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(fwd.rstd.sizes(), at::IntArrayRef({2, 3}));
  const NormForwardResult flat = NormForward(x.reshape({6, 16}), gamma, beta, params);
  EXPECT_TRUE(AllClose(fwd.y.reshape({6, 16}), flat.y, ToleranceFor(at::kBFloat16)));
  const NormBackwardResult bwd = NormBackward(x, x, gamma, fwd.mean, fwd.rstd, params);
  EXPECT_EQ(bwd.dx.sizes(), x.sizes());
  EXPECT_EQ(bwd.dgamma.scalar_type(), at::kFloat);
  EXPECT_EQ(bwd.dbeta.scalar_type(), at::kFloat);
}

TEST(NormReferenceTest, ZeroRows) {
  const at::Tensor x = at::empty({0, 8}, at::kFloat);
  const at::Tensor gamma = RandomInput({8}, 50);
  const NormParams params{NormKind::kRMSNorm, kEps, false};
  const NormForwardResult fwd = NormForward(x, gamma, at::Tensor(), params);
  EXPECT_EQ(fwd.y.sizes(), x.sizes());
  EXPECT_EQ(fwd.rstd.numel(), 0);
  const NormBackwardResult bwd = NormBackward(x, x, gamma, at::Tensor(), fwd.rstd, params);
  EXPECT_TRUE(AllClose(bwd.dgamma, at::zeros({8}, at::kFloat), ToleranceFor(at::kFloat)));
}

// ResidualAddNormForward (the CPU dispatch, i.e. the reference) against the unfused ATen add in x's dtype followed
// by NormForwardReference: h and y identical (same rounded h, then the same float64 norm); the backward against
// NormBackwardReference(dy, h).dx + dh (which rounds twice: the dtype's tolerance) and, without dh, identical.
TEST(ResidualAddNormTest, MatchesUnfusedAddThenNorm) {
  uint64_t seed = 900;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (at::ScalarType dtype : Dtypes()) {
      for (int64_t hidden : AwkwardHiddens()) {
        for (int64_t rows : AwkwardRows()) {
          SCOPED_TRACE(Where(kind, rows, hidden, dtype));
          const NormParams params{kind, kEps, /*zero_centered_gamma=*/hidden == 7};
          const at::Tensor x = RandomInput({rows, hidden}, seed++, 1.0).to(dtype);
          const at::Tensor residual = RandomInput({rows, hidden}, seed++).to(dtype);
          const at::Tensor gamma = RandomInput({hidden}, seed++).to(dtype);
          const at::Tensor beta = kind == NormKind::kLayerNorm ? RandomInput({hidden}, seed++).to(dtype)
                                                               : at::Tensor();
          const NormForwardResult got = ResidualAddNormForward(x, residual, gamma, beta, params);
          const at::Tensor h = at::add(x, residual);  // ATen's add in dtype: float32 arithmetic, one rounding
          const NormForwardResult want = NormForwardReference(h, gamma, beta, params);
          ASSERT_TRUE(got.h.defined());
          EXPECT_EQ(got.h.scalar_type(), dtype);
          EXPECT_TRUE(AllClose(got.h, h, ToleranceFor(at::kDouble))) << "h";
          EXPECT_TRUE(AllClose(got.y, want.y, ToleranceFor(at::kDouble))) << "y";
          EXPECT_TRUE(AllClose(got.rstd, want.rstd, ToleranceFor(at::kDouble))) << "rstd";
          if (kind == NormKind::kLayerNorm) {
            EXPECT_TRUE(AllClose(got.mean, want.mean, ToleranceFor(at::kDouble))) << "mean";
          }

          const at::Tensor dy = RandomInput({rows, hidden}, seed++).to(dtype);
          const at::Tensor dh = RandomInput({rows, hidden}, seed++).to(dtype);
          const NormBackwardResult unfused = NormBackwardReference(dy, h, gamma, want.mean, want.rstd, params);
          const NormBackwardResult fused = ResidualAddNormBackward(dy, dh, got.h, gamma, got.mean, got.rstd, params);
          EXPECT_TRUE(AllClose(fused.dx, at::add(unfused.dx, dh), ToleranceFor(dtype))) << "dx with dh";
          EXPECT_TRUE(AllClose(fused.dgamma, unfused.dgamma, ToleranceFor(at::kDouble))) << "dgamma";
          if (kind == NormKind::kLayerNorm) {
            EXPECT_TRUE(AllClose(fused.dbeta, unfused.dbeta, ToleranceFor(at::kDouble))) << "dbeta";
          }
          const NormBackwardResult no_dh =
              ResidualAddNormBackward(dy, at::Tensor(), got.h, gamma, got.mean, got.rstd, params);
          EXPECT_TRUE(AllClose(no_dh.dx, unfused.dx, ToleranceFor(at::kDouble))) << "dx without dh";
        }
      }
    }
  }
}

// L = sum(y * w) + sum(h * v) (h also feeds a later residual add): dL/dx = dL/dresidual = the backward's dx with
// dy = w and dh = v; dgamma, dbeta; by central differences in float64.
TEST(ResidualAddNormTest, BackwardMatchesFiniteDifferences) {
  constexpr int64_t kRows = 3;
  constexpr int64_t kHidden = 7;
  constexpr double kStep = 1e-6;
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm}) {
    for (bool zero_centered : {false, true}) {
      SCOPED_TRACE(std::string(kind == NormKind::kLayerNorm ? "LayerNorm" : "RMSNorm") +
                   (zero_centered ? " zero-centred" : ""));
      const NormParams params{kind, kEps, zero_centered};
      at::Tensor x = RandomInput({kRows, kHidden}, 31, 0.5).to(at::kDouble);
      at::Tensor residual = RandomInput({kRows, kHidden}, 32).to(at::kDouble);
      at::Tensor gamma = RandomInput({kHidden}, 33).to(at::kDouble);
      at::Tensor beta = kind == NormKind::kLayerNorm ? RandomInput({kHidden}, 34).to(at::kDouble) : at::Tensor();
      const at::Tensor w = RandomInput({kRows, kHidden}, 35).to(at::kDouble);
      const at::Tensor v = RandomInput({kRows, kHidden}, 36).to(at::kDouble);
      auto loss = [&] {
        const NormForwardResult f = ResidualAddNormForward(x, residual, gamma, beta, params);
        return ((f.y * w).sum() + (f.h * v).sum()).item<double>();
      };
      const NormForwardResult fwd = ResidualAddNormForward(x, residual, gamma, beta, params);
      const NormBackwardResult grads = ResidualAddNormBackward(w, v, fwd.h, gamma, fwd.mean, fwd.rstd, params);
      ASSERT_EQ(grads.dx.scalar_type(), at::kDouble);

      auto check = [&](at::Tensor& param, const at::Tensor& analytic, int64_t flat) {
        double* p = param.data_ptr<double>() + flat;
        const double saved = *p;
        *p = saved + kStep;
        const double up = loss();
        *p = saved - kStep;
        const double down = loss();
        *p = saved;
        const double numeric = (up - down) / (2 * kStep);
        const double got = analytic.reshape({-1})[flat].item<double>();
        EXPECT_NEAR(got, numeric, 1e-6 + 1e-6 * std::abs(numeric)) << "element " << flat;
      };
      for (int64_t flat : {0L, 8L, 20L}) check(x, grads.dx, flat);
      for (int64_t flat : {2L, 13L}) check(residual, grads.dx, flat);  // dresidual = dx
      for (int64_t flat : {0L, 3L, 6L}) check(gamma, grads.dgamma, flat);
      if (beta.defined()) {
        for (int64_t flat : {1L, 5L}) check(beta, grads.dbeta, flat);
      }
    }
  }
}

TEST(ResidualAddNormTest, RejectsBadInputs) {
  const at::Tensor x = RandomInput({4, 8}, 80);
  const at::Tensor gamma = RandomInput({8}, 81);
  const NormParams rms{NormKind::kRMSNorm, kEps, false};
  EXPECT_THROW(ResidualAddNormForward(x, RandomInput({4, 7}, 82), gamma, at::Tensor(), rms), c10::Error);
  EXPECT_THROW(ResidualAddNormForward(x, x.to(at::kHalf), gamma, at::Tensor(), rms), c10::Error);
  EXPECT_THROW(ResidualAddNormForward(x, at::Tensor(), gamma, at::Tensor(), rms), c10::Error);
  const NormForwardResult fwd = ResidualAddNormForward(x, x, gamma, at::Tensor(), rms);
  EXPECT_THROW(ResidualAddNormBackward(x, RandomInput({8, 4}, 83), fwd.h, gamma, at::Tensor(), fwd.rstd, rms),
               c10::Error);
  EXPECT_THROW(ResidualAddNormBackward(x, x.to(at::kBFloat16), fwd.h, gamma, at::Tensor(), fwd.rstd, rms),
               c10::Error);
}

TEST(NormContractTest, RejectsBadInputs) {
  const at::Tensor x = RandomInput({4, 8}, 60);
  const at::Tensor gamma = RandomInput({8}, 61);
  const NormParams ln{NormKind::kLayerNorm, kEps, false};
  const NormParams rms{NormKind::kRMSNorm, kEps, false};
  EXPECT_THROW(NormForward(x, RandomInput({7}, 62), at::Tensor(), ln), c10::Error);            // gamma size
  EXPECT_THROW(NormForward(x, gamma, gamma, rms), c10::Error);                                 // beta for RMSNorm
  EXPECT_THROW(NormForward(x.t(), RandomInput({4}, 63), at::Tensor(), ln), c10::Error);        // not contiguous
  EXPECT_THROW(NormForward(x.to(at::kInt), gamma, at::Tensor(), ln), c10::Error);              // dtype
  EXPECT_THROW(NormForward(x.to(at::kBFloat16), gamma.to(at::kHalf), at::Tensor(), ln), c10::Error);  // gamma dtype
  const NormForwardResult fwd = NormForward(x, gamma, at::Tensor(), ln);
  EXPECT_THROW(NormBackward(x, x, gamma, at::Tensor(), fwd.rstd, ln), c10::Error);        // LayerNorm needs mean
  EXPECT_THROW(NormBackward(x, x, gamma, fwd.mean, fwd.rstd, rms), c10::Error);           // RMSNorm takes none
  EXPECT_THROW(NormBackward(x.to(at::kHalf), x, gamma, fwd.mean, fwd.rstd, ln), c10::Error);  // dy dtype
}

TEST(NormContractTest, CpuBinaryHasNoCudaImplementation) {
  EXPECT_FALSE(HasCudaNormImpl());
  const at::Tensor x = RandomInput({3, 5}, 70);
  const at::Tensor gamma = RandomInput({5}, 71);
  const NormParams params{NormKind::kRMSNorm, kEps, false};
  EXPECT_TRUE(AllClose(NormForward(x, gamma, at::Tensor(), params).y,
                       NormForwardReference(x, gamma, at::Tensor(), params).y, ToleranceFor(at::kDouble)));
}

}  // namespace
}  // namespace megatron::fusions
