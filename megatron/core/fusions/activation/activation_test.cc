// CPU tests of the bias + activation unit: the float64 reference against PyTorch's outputs and autograd gradients
// (testdata/torch_activation.txt, from make_fixtures.py) and Megatron's bias_gelu formulas, against finite
// differences on other shapes, leading dimensions and no-bias calls, dtypes, contract errors, and that a CPU
// binary has no CUDA kernels.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "megatron/core/fusions/activation/activation.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/fixtures.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

constexpr Tolerance kFloat64Tight{1e-7, 1e-9};

std::map<std::string, std::vector<double>> ReadFixture() { return testing::ReadFixture("megatron/core/fusions/activation/testdata/torch_activation.txt"); }

at::Tensor Vec(const std::vector<double>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kDouble)); }

at::Tensor ClosedForm(int64_t n, double freq, double amp, bool cosine) {
  const at::Tensor i = at::arange(n, at::kDouble) * freq;
  return (cosine ? at::cos(i) : at::sin(i)) * amp;
}

struct Kind {
  const char* name;
  ActivationKind kind;
};
const Kind kKinds[] = {{"gelu_tanh", ActivationKind::kGeluTanh},
                       {"gelu_erf", ActivationKind::kGeluErf},
                       {"swiglu", ActivationKind::kSwiGLU}};

TEST(ActivationReferenceTest, MatchesPyTorchForwardAndAutograd) {
  const auto fixture = ReadFixture();
  const at::Tensor x = ClosedForm(24, 0.37, 3, false).view({3, 8});
  const at::Tensor bias = ClosedForm(8, 0.9, 0.5, true);
  for (const Kind& k : kKinds) {
    SCOPED_TRACE(k.name);
    const std::string name = k.name;
    const at::Tensor y = BiasActivationForward(x, bias, k.kind);  // CPU: the reference
    EXPECT_TRUE(AllClose(y.flatten(), Vec(fixture.at(name + " y")), kFloat64Tight));
    const at::Tensor dy = ClosedForm(y.numel(), 0.11, 1, true).view(y.sizes());
    const ActivationBackwardResult g = BiasActivationBackward(dy, x, bias, k.kind);
    EXPECT_TRUE(AllClose(g.dx.flatten(), Vec(fixture.at(name + " dx")), kFloat64Tight));
    EXPECT_TRUE(AllClose(g.dbias, Vec(fixture.at(name + " dbias")), kFloat64Tight));
  }
}

// Megatron's bias_gelu rounds sqrt(2/pi) to 0.79788456 (1e-9 relative): the same function to 1e-7.
TEST(ActivationReferenceTest, GeluTanhIsMegatronsBiasGelu) {
  const auto fixture = ReadFixture();
  const at::Tensor x = ClosedForm(24, 0.37, 3, false).view({3, 8});
  const at::Tensor bias = ClosedForm(8, 0.9, 0.5, true);
  EXPECT_TRUE(AllClose(BiasActivationForward(x, bias, ActivationKind::kGeluTanh).flatten(),
                       Vec(fixture.at("megatron_gelu y")), kFloat64Tight));
  const at::Tensor dy = ClosedForm(24, 0.11, 1, true).view({3, 8});
  EXPECT_TRUE(AllClose(BiasActivationBackward(dy, x, bias, ActivationKind::kGeluTanh).dx.flatten(),
                       Vec(fixture.at("megatron_gelu dx")), kFloat64Tight));
}

TEST(ActivationReferenceTest, BackwardMatchesFiniteDifferences) {
  const at::Tensor x = at::randn({2, 3, 6}, at::kDouble) * 2;
  const at::Tensor bias = at::randn({6}, at::kDouble);
  for (const Kind& k : kKinds) {
    SCOPED_TRACE(k.name);
    const at::Tensor dy = at::randn(BiasActivationForward(x, bias, k.kind).sizes(), at::kDouble);
    const ActivationBackwardResult g = BiasActivationBackward(dy, x, bias, k.kind);
    at::Tensor numeric = at::empty_like(x);
    const double h = 1e-6;
    for (int64_t i = 0; i < x.numel(); ++i) {
      at::Tensor xp = x.clone();
      at::Tensor xm = x.clone();
      xp.view({-1})[i] += h;
      xm.view({-1})[i] -= h;
      numeric.view({-1})[i] = (at::sum(dy * BiasActivationForward(xp, bias, k.kind)) -
                               at::sum(dy * BiasActivationForward(xm, bias, k.kind)))
                                  .item<double>() /
                              (2 * h);
    }
    EXPECT_TRUE(AllClose(g.dx, numeric, Tolerance{1e-6, 1e-8}));
    EXPECT_TRUE(AllClose(g.dbias, at::sum(g.dx, at::IntArrayRef{0, 1}), Tolerance{1e-12, 1e-12}));
    EXPECT_FALSE(BiasActivationBackward(dy, x, at::Tensor(), k.kind).dbias.defined());
  }
}

TEST(ActivationReferenceTest, OutputsInTheInputDtypeAndShape) {
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor x = at::randn({4, 2, 10}).to(t);
    const at::Tensor y = BiasActivationForward(x, at::Tensor(), ActivationKind::kSwiGLU);
    EXPECT_EQ(y.scalar_type(), t);
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{4, 2, 5}));
    EXPECT_EQ(BiasActivationBackward(y, x, at::Tensor(), ActivationKind::kSwiGLU).dx.sizes(), x.sizes());
  }
}

TEST(ActivationContractTest, RejectsBadInputs) {
  const at::Tensor x = at::randn({3, 8});
  EXPECT_THROW(BiasActivationForward(at::randn({3, 7}), at::Tensor(), ActivationKind::kSwiGLU), c10::Error);
  EXPECT_THROW(BiasActivationForward(x, at::randn({7}), ActivationKind::kGeluTanh), c10::Error);
  EXPECT_THROW(BiasActivationForward(x, at::randn({8}).to(at::kHalf), ActivationKind::kGeluTanh), c10::Error);
  EXPECT_THROW(BiasActivationForward(x.t(), at::Tensor(), ActivationKind::kGeluErf), c10::Error);
  EXPECT_THROW(BiasActivationForward(x.to(at::kInt), at::Tensor(), ActivationKind::kGeluErf), c10::Error);
  EXPECT_THROW(BiasActivationBackward(at::randn({3, 8}), x, at::Tensor(), ActivationKind::kSwiGLU), c10::Error);
  try {
    BiasActivationForward(at::randn({3, 7}), at::Tensor(), ActivationKind::kSwiGLU);
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("[3, 7]"), std::string::npos);
  }
}

TEST(ActivationContractTest, CpuBinaryHasNoCudaImplementation) { EXPECT_FALSE(HasCudaActivationImpl()); }

}  // namespace
}  // namespace megatron::fusions
