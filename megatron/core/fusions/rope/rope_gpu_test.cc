// GPU tests of the CUDA rotary position embedding: every element against the float64 reference for both layouts,
// full and partial rotation, float32 / bfloat16 / float16, contiguous and strided (QKV-view) inputs, the packed
// and scalar paths, long sequences (large angles), zero rows. Skipped (GTEST_SKIP) without a CUDA device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>

#include "megatron/core/fusions/rope/rope.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/cuda_device.h"
#include "megatron/core/models/common/rotary_pos_embedding.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::DtypeName;
using testing::Tolerance;
using testing::ToleranceFor;


const at::Device kCuda(at::kCUDA, 0);

// float32 angles up to s rad carry an absolute error of ~s * 2^-24 before any arithmetic (the reference sees the
// same float32 angle, but computes sin/cos in float64 while the kernel reduces in float32): allow 1e-4 absolute.
Tolerance TolFor(at::ScalarType dt) {
  Tolerance t = ToleranceFor(dt);
  if (dt == at::kFloat) t.atol = 1e-4;
  return t;
}

void CheckCase(RotaryLayout layout, at::ScalarType dt, int64_t s, int64_t b, int64_t n, int64_t d, int64_t r,
               int64_t row_pad) {
  SCOPED_TRACE(DtypeName(dt) + " s=" + std::to_string(s) + " b=" + std::to_string(b) + " n=" + std::to_string(n) +
               " d=" + std::to_string(d) + " r=" + std::to_string(r) + " pad=" + std::to_string(row_pad) +
               " layout=" + std::to_string(static_cast<int>(layout)));
  // A strided view when row_pad > 0: each head's d features sit in a row of d + row_pad.
  const at::Tensor buf = at::randn({s, b, n, d + row_pad}, at::TensorOptions().dtype(dt)).to(kCuda);
  const at::Tensor t = buf.narrow(-1, row_pad, d);
  // Megatron-style angles (positions x inverse frequencies), pairs sharing an angle.
  const models::RotaryEmbedding rotary(r, 10000.0);
  at::Tensor freqs = rotary.Forward(s, 0, kCuda);  // [s, 1, 1, r], halves layout
  if (layout == RotaryLayout::kInterleaved) {
    freqs = freqs.narrow(-1, 0, r / 2).unsqueeze(-1).expand({s, 1, 1, r / 2, 2}).reshape({s, 1, 1, r}).contiguous();
  }
  const RopeParams params{layout};
  const at::Tensor y = RopeForward(t, freqs, params);
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_TRUE(AllClose(y, RopeForwardReference(t.cpu(), freqs.cpu(), params), TolFor(dt)));
  const at::Tensor dy = at::randn({s, b, n, d}, at::TensorOptions().dtype(dt)).to(kCuda);
  EXPECT_TRUE(AllClose(RopeBackward(dy, freqs, params), RopeBackwardReference(dy.cpu(), freqs.cpu(), params),
                       TolFor(dt)));
}

TEST(RopeCudaTest, KernelsAreRegistered) { EXPECT_TRUE(HasCudaRopeImpl()); }

TEST(RopeCudaTest, MatchesReferenceOnAwkwardShapes) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (RotaryLayout layout : {RotaryLayout::kHalves, RotaryLayout::kInterleaved}) {
      CheckCase(layout, dt, 1, 1, 1, 2, 2, 0);
      CheckCase(layout, dt, 7, 3, 5, 64, 64, 0);
      CheckCase(layout, dt, 9, 2, 4, 128, 64, 0);     // rotary fraction 0.5
      CheckCase(layout, dt, 5, 1, 3, 128, 32, 0);     // 0.25
      CheckCase(layout, dt, 11, 2, 3, 10, 6, 0);      // nothing a multiple of the pack: scalar path
      CheckCase(layout, dt, 6, 2, 4, 128, 128, 256);  // strided like k in the QKV view
      CheckCase(layout, dt, 6, 2, 4, 64, 48, 3);      // misaligned view: scalar path
      CheckCase(layout, dt, 4096, 1, 2, 64, 64, 0);   // angles up to 4095 rad
    }
  }
}

TEST(RopeCudaTest, ZeroRows) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const at::Tensor t = at::empty({0, 2, 3, 8}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda));
  const at::Tensor freqs = at::empty({0, 1, 1, 8}, at::TensorOptions().dtype(at::kFloat).device(kCuda));
  EXPECT_EQ(RopeForward(t, freqs, RopeParams{}).numel(), 0);
}

}  // namespace
}  // namespace megatron::fusions
