// CPU tests of the rotary position embedding unit: the float64 reference against Megatron's apply_rotary_pos_emb
// run by PyTorch (testdata/torch_rope.txt from make_fixtures.py: halves and interleaved, full and half rotary
// fraction, forward and autograd backward), against the local backend's models::ApplyRotaryPosEmb, the backward as
// the exact transpose of the forward for arbitrary angles, strided inputs, dtypes and contract errors.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cos.h>
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

#include "megatron/core/fusions/rope/rope.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/fixtures.h"
#include "megatron/core/models/common/rotary_pos_embedding.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

constexpr int64_t kS = 5, kB = 2, kN = 3, kD = 8;

std::map<std::string, std::vector<double>> ReadFixture() { return testing::ReadFixture("megatron/core/fusions/rope/testdata/torch_rope.txt"); }

at::Tensor Vec(const std::vector<double>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kDouble)); }

TEST(RopeReferenceTest, MatchesMegatronApplyRotaryPosEmb) {
  const auto fixture = ReadFixture();
  const at::Tensor t = (at::sin(at::arange(kS * kB * kN * kD, at::kDouble) * 0.3 + 0.1) * 2).view({kS, kB, kN, kD});
  const at::Tensor dy = at::cos(at::arange(kS * kB * kN * kD, at::kDouble) * 0.17).view({kS, kB, kN, kD});
  for (const char* layout : {"halves", "interleaved"}) {
    for (const char* percent : {"1.0", "0.5"}) {
      const std::string c = std::string(layout) + "_" + percent;
      SCOPED_TRACE(c);
      const std::vector<double>& f = fixture.at(c + " freqs");
      const at::Tensor freqs = Vec(f).view({kS, 1, 1, static_cast<int64_t>(f.size()) / kS});
      const RopeParams params{std::string(layout) == "halves" ? RotaryLayout::kHalves : RotaryLayout::kInterleaved};
      EXPECT_TRUE(AllClose(RopeForward(t, freqs, params).flatten(), Vec(fixture.at(c + " y")),
                           Tolerance{1e-12, 1e-12}));
      EXPECT_TRUE(AllClose(RopeBackward(dy, freqs, params).flatten(), Vec(fixture.at(c + " dt")),
                           Tolerance{1e-12, 1e-12}));
    }
  }
}

TEST(RopeReferenceTest, EqualsTheLocalBackendsRope) {
  const models::RotaryEmbedding rotary(16, 10000.0);
  const at::Tensor freqs = rotary.Forward(7, 3, at::kCPU);  // [7, 1, 1, 16] float32, positions 3..9
  const at::Tensor t = at::randn({7, 2, 4, 16});
  EXPECT_TRUE(AllClose(RopeForward(t, freqs, RopeParams{}), models::ApplyRotaryPosEmb(t, freqs),
                       Tolerance{1e-5, 1e-6}));
}

// <R x, y> == <x, R^T y> for random angles (not duplicated within a pair), both layouts, partial rotation.
TEST(RopeReferenceTest, BackwardIsTheTransposeOfForward) {
  for (RotaryLayout layout : {RotaryLayout::kHalves, RotaryLayout::kInterleaved}) {
    for (int64_t r : {2, 6, 10}) {
      const at::Tensor freqs = at::randn({4, 1, 1, r}, at::kDouble) * 3;
      const at::Tensor x = at::randn({4, 3, 2, 10}, at::kDouble);
      const at::Tensor y = at::randn({4, 3, 2, 10}, at::kDouble);
      const double lhs = at::sum(RopeForward(x, freqs, RopeParams{layout}) * y).item<double>();
      const double rhs = at::sum(x * RopeBackward(y, freqs, RopeParams{layout})).item<double>();
      EXPECT_NEAR(lhs, rhs, 1e-10 * std::max(1.0, std::abs(lhs))) << "r=" << r;
    }
  }
}

TEST(RopeReferenceTest, StridedInputsAndDtypes) {
  // k as it comes out of the QKV projection: a view with a row stride larger than d.
  const at::Tensor qkv = at::randn({6, 2, 3, 3 * 8});
  const at::Tensor k = qkv.narrow(-1, 8, 8);
  ASSERT_FALSE(k.is_contiguous());
  const at::Tensor freqs = at::randn({6, 1, 1, 4});
  const at::Tensor got = RopeForward(k, freqs, RopeParams{});
  EXPECT_TRUE(got.is_contiguous());
  EXPECT_TRUE(AllClose(got, RopeForward(k.contiguous(), freqs, RopeParams{}), Tolerance{0, 0}));
  for (at::ScalarType dt : {at::kBFloat16, at::kHalf}) {
    EXPECT_EQ(RopeForward(k.to(dt), freqs, RopeParams{}).scalar_type(), dt);
  }
}

TEST(RopeContractTest, RejectsBadInputs) {
  const at::Tensor t = at::randn({4, 2, 3, 8});
  EXPECT_THROW(RopeForward(t, at::randn({4, 1, 1, 7}), RopeParams{}), c10::Error);   // odd r
  EXPECT_THROW(RopeForward(t, at::randn({4, 1, 1, 10}), RopeParams{}), c10::Error);  // r > d
  EXPECT_THROW(RopeForward(t, at::randn({3, 1, 1, 8}), RopeParams{}), c10::Error);   // s mismatch
  EXPECT_THROW(RopeForward(t, at::randn({4, 1, 1, 8}).to(at::kHalf), RopeParams{}), c10::Error);
  EXPECT_THROW(RopeForward(t.transpose(2, 3), at::randn({4, 1, 1, 2}), RopeParams{}), c10::Error);
  EXPECT_THROW(RopeForward(t.view({4, 2, 24}), at::randn({4, 1, 1, 8}), RopeParams{}), c10::Error);
  try {
    RopeForward(t, at::randn({4, 1, 1, 10}), RopeParams{});
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("[4, 1, 1, 10]"), std::string::npos);
  }
}

TEST(RopeContractTest, CpuBinaryHasNoCudaImplementation) { EXPECT_FALSE(HasCudaRopeImpl()); }

}  // namespace
}  // namespace megatron::fusions
