// CPU tests of the softmax unit: the float64 reference against PyTorch's outputs (testdata/torch_softmax.txt, from
// make_fixtures.py) and against finite differences; the availability rule against Megatron's is_kernel_available
// over an exhaustive grid (testdata/availability.txt); the fallback path against PyTorch's module path on bf16;
// contract errors; and that a CPU binary has no CUDA kernels.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones_like.h>
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

#include "megatron/core/fusions/softmax/softmax.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/fixtures.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

constexpr int64_t kB = 2, kNp = 3, kSq = 5, kSk = 5;
constexpr float kScale = 0.7f;

std::string TestData(const std::string& name) { return "megatron/core/fusions/softmax/testdata/" + name; }

std::map<std::string, std::vector<double>> ReadTorchFixture() { return testing::ReadFixture(TestData("torch_softmax.txt")); }

at::Tensor FromVector(const std::vector<double>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble)).view({kB, kNp, kSq, kSk});
}

// The closed-form inputs of make_fixtures.py.
at::Tensor FixtureX() { return at::sin(at::arange(kB * kNp * kSq * kSk, at::kDouble) * 0.37).mul(3).view({kB, kNp, kSq, kSk}); }
at::Tensor FixtureDy() { return at::cos(at::arange(kB * kNp * kSq * kSk, at::kDouble) * 0.11).view({kB, kNp, kSq, kSk}); }
at::Tensor FixtureMask() {
  at::Tensor m = at::empty({kB, 1, kSq, kSk}, at::kBool);
  auto a = m.accessor<bool, 4>();
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t q = 0; q < kSq; ++q)
      for (int64_t k = 0; k < kSk; ++k) a[b][0][q][k] = (7 * q + 3 * k + b) % 5 == 0;
  return m;
}

struct Form {
  const char* name;
  SoftmaxMask mask;
};
const Form kForms[] = {{"none", SoftmaxMask::kNone}, {"explicit", SoftmaxMask::kExplicit},
                       {"causal", SoftmaxMask::kCausal}};

TEST(SoftmaxReferenceTest, MatchesPyTorchForwardAndAutogradBackward) {
  const auto fixture = ReadTorchFixture();
  const at::Tensor x = FixtureX();
  for (const Form& form : kForms) {
    SCOPED_TRACE(form.name);
    const SoftmaxParams params{form.mask, kScale};
    const at::Tensor mask = form.mask == SoftmaxMask::kExplicit ? FixtureMask() : at::Tensor();
    const at::Tensor y = ScaledMaskedSoftmaxForward(x, mask, params);  // CPU: the reference
    // kScale is a float; PyTorch multiplied by the double 0.7: relative 1e-8 of difference in z.
    EXPECT_TRUE(AllClose(y, FromVector(fixture.at(std::string(form.name) + " y")), Tolerance{1e-7, 1e-9}));
    const at::Tensor dx = ScaledMaskedSoftmaxBackward(FixtureDy(), y, params);
    EXPECT_TRUE(AllClose(dx, FromVector(fixture.at(std::string(form.name) + " dx")), Tolerance{1e-7, 1e-9}));
  }
}

TEST(SoftmaxReferenceTest, CausalRowsAreZeroAboveTheDiagonal) {
  const at::Tensor y = ScaledMaskedSoftmaxForward(FixtureX().view({-1, kSq, kSk}), at::Tensor(),
                                                  SoftmaxParams{SoftmaxMask::kCausal, 1.f});
  auto a = y.accessor<double, 3>();
  for (int64_t r = 0; r < y.size(0); ++r)
    for (int64_t q = 0; q < kSq; ++q)
      for (int64_t k = q + 1; k < kSk; ++k) EXPECT_EQ(a[r][q][k], 0.0);
  EXPECT_TRUE(AllClose(at::sum(y, {-1}), at::ones_like(at::sum(y, {-1})), Tolerance{1e-12, 1e-12}));
}

// d/dx of sum(dy * softmax(x)) by central differences, float64, every element.
TEST(SoftmaxReferenceTest, BackwardMatchesFiniteDifferences) {
  const at::Tensor x = at::randn({1, 2, 4, 7}, at::kDouble);
  const at::Tensor dy = at::randn({1, 2, 4, 7}, at::kDouble);
  at::Tensor mask = at::randn({1, 1, 4, 7}, at::kDouble) > 0.5;
  for (const Form& form : kForms) {
    SCOPED_TRACE(form.name);
    const at::Tensor xs = form.mask == SoftmaxMask::kCausal ? x.narrow(3, 0, 4).contiguous() : x;
    const at::Tensor dys = form.mask == SoftmaxMask::kCausal ? dy.narrow(3, 0, 4).contiguous() : dy;
    const at::Tensor m = form.mask == SoftmaxMask::kExplicit ? mask : at::Tensor();
    const SoftmaxParams params{form.mask, 1.3f};
    const at::Tensor dx = ScaledMaskedSoftmaxBackward(dys, ScaledMaskedSoftmaxForward(xs, m, params), params);
    at::Tensor numeric = at::empty_like(xs);
    const double h = 1e-6;
    for (int64_t i = 0; i < xs.numel(); ++i) {
      at::Tensor xp = xs.clone();
      at::Tensor xm = xs.clone();
      xp.view({-1})[i] += h;
      xm.view({-1})[i] -= h;
      const double fp = at::sum(dys * ScaledMaskedSoftmaxForward(xp, m, params)).item<double>();
      const double fm = at::sum(dys * ScaledMaskedSoftmaxForward(xm, m, params)).item<double>();
      numeric.view({-1})[i] = (fp - fm) / (2 * h);
    }
    EXPECT_TRUE(AllClose(dx, numeric, Tolerance{1e-6, 1e-8}));
  }
}

TEST(SoftmaxReferenceTest, OutputsInTheInputDtype) {
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor x = FixtureX().to(t);
    const at::Tensor y = ScaledMaskedSoftmaxForward(x, FixtureMask(), SoftmaxParams{SoftmaxMask::kExplicit, 1.f});
    EXPECT_EQ(y.scalar_type(), t);
    EXPECT_EQ(ScaledMaskedSoftmaxBackward(FixtureDy().to(t), y, SoftmaxParams{}).scalar_type(), t);
  }
}

// Every (b, np, sq, sk) of the grid for all 24 settings, against Megatron's function (make_fixtures.py).
TEST(FusedSoftmaxAvailabilityTest, MatchesMegatronOnExhaustiveGrid) {
  std::ifstream in(TestData("availability.txt"));
  ASSERT_TRUE(in.good()) << "missing " << TestData("availability.txt");
  std::map<std::string, std::vector<int64_t>> grid;
  std::string line;
  int settings = 0;
  int64_t available = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string first;
    ls >> first;
    if (first.back() == ':') {
      int64_t v;
      while (ls >> v) grid[first.substr(0, first.size() - 1)].push_back(v);
      continue;
    }
    std::string mask, dtype, bits;
    int fusion;
    ls >> mask >> dtype >> fusion >> bits;
    FusedSoftmaxConfig config;
    config.max_fused_keys = std::stoll(first);
    config.mask = mask == "causal" ? SoftmaxMask::kCausal : SoftmaxMask::kExplicit;
    config.input_in_fp16 = dtype == "fp16";
    config.input_in_bf16 = dtype == "bf16";
    config.scaled_masked_softmax_fusion = fusion == 1;
    size_t i = 0;
    for (int64_t b : grid["b"])
      for (int64_t np : grid["np"])
        for (int64_t sq : grid["sq"])
          for (int64_t sk : grid["sk"]) {
            ASSERT_LT(i, bits.size());
            const bool want = bits[i++] == '1';
            available += want;
            EXPECT_EQ(IsFusedSoftmaxAvailable(config, b, np, sq, sk), want)
                << line.substr(0, 24) << " b=" << b << " np=" << np << " sq=" << sq << " sk=" << sk;
          }
    EXPECT_EQ(i, bits.size());
    ++settings;
  }
  EXPECT_EQ(settings, 24);
  EXPECT_GT(available, 1000);  // the grid exercises both outcomes
}

TEST(FusedSoftmaxAvailabilityTest, BatchPerBlockOfTheLegacyKernel) {
  // 128-thread blocks; warp = min(next_pow2(sk), 32); 2 rows a warp up to 128 keys.
  EXPECT_EQ(SoftmaxBatchPerBlock(4, 17, 1, 4), 8);     // pow2 32: 4 warps x 2
  EXPECT_EQ(SoftmaxBatchPerBlock(4, 128, 1, 4), 8);
  EXPECT_EQ(SoftmaxBatchPerBlock(4, 129, 1, 4), 4);    // pow2 256: 4 warps x 1
  EXPECT_EQ(SoftmaxBatchPerBlock(4, 4096, 1, 4), 4);
  EXPECT_EQ(SoftmaxBatchPerBlock(4, 8, 1, 4), 32);     // pow2 8: 16 "warps" of 8 lanes x 2
}

TEST(FusedSoftmaxConfigTest, ConstructorAssertions) {
  FusedSoftmaxConfig ok;
  ok.input_in_bf16 = true;
  ok.scale = 0.125;
  EXPECT_TRUE(ValidateFusedSoftmaxConfig(ok).ok());
  FusedSoftmaxConfig both = ok;
  both.input_in_fp16 = true;
  EXPECT_NE(ValidateFusedSoftmaxConfig(both).message().find("input_in_fp16"), std::string::npos);
  FusedSoftmaxConfig scaled = ok;
  scaled.softmax_in_fp32 = false;
  EXPECT_NE(ValidateFusedSoftmaxConfig(scaled).message().find("softmax_in_fp32"), std::string::npos);
}

// The module's unfused path on bf16 input (cast to fp32, scale, fill -10000, softmax, cast back) against PyTorch
// running the same steps: equal to the bf16 rounding.
TEST(FusedSoftmaxFallbackTest, MatchesPyTorchModulePathOnBf16) {
  const auto fixture = ReadTorchFixture();
  const at::Tensor x = FixtureX().to(at::kBFloat16);
  FusedSoftmaxConfig config;
  config.input_in_bf16 = true;
  config.scale = 0.7;
  config.mask = SoftmaxMask::kExplicit;
  const at::Tensor y = FusedScaleMaskSoftmax(x, FixtureMask(), config);  // CPU: always the fallback
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(AllClose(y, FromVector(fixture.at("explicit fallback_bf16")), Tolerance{1e-6, 1e-6}));
  config.mask = SoftmaxMask::kCausal;  // no mask given: the default causal mask is built
  EXPECT_TRUE(AllClose(FusedScaleMaskSoftmax(x, at::Tensor(), config),
                       FromVector(fixture.at("causal fallback_bf16")), Tolerance{1e-6, 1e-6}));
}

// The fallback and the fused semantics agree where the kernels would run (float32 input here, which the fallback
// keeps in float32): the reference stands in for the kernels on the CPU.
TEST(FusedSoftmaxFallbackTest, AgreesWithTheFusedSemantics) {
  const at::Tensor x = at::randn({2, 4, 8, 8}, at::kFloat);
  const at::Tensor mask = at::randn({2, 1, 8, 8}) > 0.8;
  FusedSoftmaxConfig config;
  config.scale = 0.3;
  config.mask = SoftmaxMask::kExplicit;
  EXPECT_TRUE(AllClose(FusedScaleMaskSoftmaxFallback(x, mask, config),
                       ScaledMaskedSoftmaxForwardReference(x, mask, SoftmaxParams{SoftmaxMask::kExplicit, 0.3f}),
                       Tolerance{1e-5, 1e-6}));
  config.mask = SoftmaxMask::kCausal;
  EXPECT_TRUE(AllClose(FusedScaleMaskSoftmaxFallback(x, at::Tensor(), config),
                       ScaledMaskedSoftmaxForwardReference(x, at::Tensor(), SoftmaxParams{SoftmaxMask::kCausal, 0.3f}),
                       Tolerance{1e-5, 1e-6}));
}

TEST(SoftmaxContractTest, RejectsBadInputs) {
  const at::Tensor x = at::randn({2, 3, 4, 4});
  const SoftmaxParams causal{SoftmaxMask::kCausal, 1.f};
  EXPECT_THROW(ScaledMaskedSoftmaxForward(at::randn({2, 3, 4, 5}), at::Tensor(), causal), c10::Error);
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x, at::randn({2, 1, 4, 4}) > 0, causal), c10::Error);
  const SoftmaxParams explicit_mask{SoftmaxMask::kExplicit, 1.f};
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x, at::Tensor(), explicit_mask), c10::Error);
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x, at::randn({3, 1, 4, 4}) > 0, explicit_mask), c10::Error);
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x, at::randn({2, 1, 4, 4}), explicit_mask), c10::Error);  // not bool
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x.transpose(2, 3), at::Tensor(), SoftmaxParams{}), c10::Error);
  EXPECT_THROW(ScaledMaskedSoftmaxForward(x.to(at::kInt), at::Tensor(), SoftmaxParams{}), c10::Error);
  EXPECT_THROW(ScaledMaskedSoftmaxBackward(at::randn({2, 3, 4, 5}), x, SoftmaxParams{}), c10::Error);
  try {
    ScaledMaskedSoftmaxForward(x, at::randn({3, 1, 4, 4}) > 0, explicit_mask);
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("[3, 1, 4, 4]"), std::string::npos);
  }
}

TEST(SoftmaxContractTest, CpuBinaryHasNoCudaImplementation) { EXPECT_FALSE(HasCudaSoftmaxImpl()); }

}  // namespace
}  // namespace megatron::fusions
