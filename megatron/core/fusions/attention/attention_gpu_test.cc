// The CUDA path of fused attention (ATen's cuDNN and flash entry points) against the float64 reference on awkward
// shapes: odd and prime lengths, sq < sk (decoding, bottom-right causal), one query, GQA and MQA, d = 64 / 128 /
// 256, the [s, b, h, d]-strided views SelfAttention passes, and the packed (THD) form with uneven lengths. Every
// implementation that claims the case (auto, cudnn, flash) is run; forward and backward, bfloat16 and float16.
//
// Tolerances (every element, NaN/Inf fail): |got - ref| <= atol + rtol·|ref|. out: atol = rtol = the dtype's
// (testing/all_close.h: bf16 2e-2, fp16 5e-3): out is a convex combination of v rows, O(1), and P·V rounds P once
// to the dtype. Gradients: dk and dv sum over up to sq queries (and g heads), so their
// scale grows with the problem; atol = rtol_grad · max|ref| with rtol_grad bf16 3e-2, fp16 1e-2 (the kernels
// round P and dS to the dtype before the two GEMMs of each gradient). lse (dense): atol 1e-2 + 1e-3·|ref| (fp32
// statistics of exactly represented inputs). Each case prints its worst error over its tolerance.
#include <ATen/TensorOperators.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "megatron/core/fusions/attention/attention.h"
#include "megatron/core/fusions/attention/attention_autograd.h"
#include "megatron/core/fusions/testing/all_close.h"
#include "megatron/core/fusions/testing/cuda_device.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

const at::Device kCuda(at::kCUDA, 0);

struct Case {
  int64_t b, hq, hkv, sq, sk, d;
  bool causal;
};

std::vector<Case> Cases() {
  return {
      {2, 8, 8, 127, 127, 64, true},   {2, 8, 8, 127, 127, 64, false},  {1, 8, 2, 257, 257, 128, true},
      {2, 4, 1, 37, 37, 128, true},    {2, 4, 2, 5, 131, 64, true},     {2, 4, 2, 5, 131, 64, false},
      {1, 4, 4, 1, 77, 64, true},      {1, 2, 2, 64, 64, 256, true},    {3, 6, 3, 200, 200, 128, false},
      {1, 4, 4, 96, 1, 64, false},
  };
}

double GradRtol(at::ScalarType t) { return t == at::kBFloat16 ? 3e-2 : 1e-2; }

// atol scales with the largest reference value of this gradient, but never below the scale of the whole backward
// (the largest of |dq|, |dk|, |dv|): a gradient that is exactly zero in float64 (dq and dk with a single key, where
// the softmax is constant) comes out of the kernels as rounding noise of the other terms' size.
Tolerance GradTolerance(const at::Tensor& ref, at::ScalarType t, const AttentionGrads& all) {
  const double r = GradRtol(t);
  const double backward_scale = std::max({all.dq.abs().max().item<double>(), all.dk.abs().max().item<double>(),
                                          all.dv.abs().max().item<double>()});
  return {r, r * std::max({ref.abs().max().item<double>(), 1e-3 * backward_scale, 1e-6})};
}

// Worst |got - ref| / (atol + rtol |ref|) over all elements: <= 1 passes. Printed for the log.
double WorstRatio(const at::Tensor& got, const at::Tensor& ref, Tolerance tol) {
  const at::Tensor g = got.to(at::kDouble), r = ref.to(at::kDouble);
  return ((g - r).abs() / (tol.atol + tol.rtol * r.abs())).max().item<double>();
}

// [b, h, s, d] either contiguous or as the permuted view of an [s, b, h, d] buffer (what SelfAttention passes).
at::Tensor Make(int64_t b, int64_t h, int64_t s, int64_t d, at::ScalarType t, bool sbhd) {
  const auto opts = at::TensorOptions().dtype(t).device(kCuda);
  return sbhd ? at::randn({s, b, h, d}, opts).permute({1, 2, 0, 3}) : at::randn({b, h, s, d}, opts);
}

std::string Name(const Case& c, at::ScalarType t, AttentionImpl impl, bool sbhd) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "b=%ld hq=%ld hkv=%ld sq=%ld sk=%ld d=%ld %s %s impl=%s%s", c.b, c.hq, c.hkv, c.sq,
                c.sk, c.d, c.causal ? "causal" : "full", c10::toString(t), AttentionImplName(impl),
                sbhd ? " sbhd-view" : "");
  return buf;
}

TEST(AttentionGpu, DenseForwardBackwardMatchReference) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  ASSERT_TRUE(HasCudaAttentionImpl());
  int ran = 0;
  for (const Case& c : Cases()) {
    for (at::ScalarType t : {at::kBFloat16, at::kHalf}) {
      for (AttentionImpl impl : {AttentionImpl::kAuto, AttentionImpl::kCudnn, AttentionImpl::kFlash}) {
        for (bool sbhd : {false, true}) {
          if (sbhd && t == at::kHalf) continue;  // the layout is dtype-blind; keeps cuDNN graph builds down
          const AttentionParams p{1.0 / std::sqrt(static_cast<double>(c.d)),
                                  c.causal ? AttentionMask::kCausal : AttentionMask::kNone, impl};
          AttentionImpl chosen;
          try {
            chosen = ChooseAttentionImpl({false, c.hq, c.hkv, c.sq, c.sk, c.d}, p);
          } catch (const c10::Error&) {
            continue;  // impl=cudnn on a case it cannot run: the CPU test checks that error
          }
          const std::string name = Name(c, t, impl, sbhd);
          SCOPED_TRACE(name);
          at::manual_seed(static_cast<uint64_t>(c.sq * 1000 + c.sk));
          const at::Tensor q = Make(c.b, c.hq, c.sq, c.d, t, sbhd), k = Make(c.b, c.hkv, c.sk, c.d, t, sbhd),
                           v = Make(c.b, c.hkv, c.sk, c.d, t, sbhd), dout = Make(c.b, c.hq, c.sq, c.d, t, false);
          const AttentionForwardResult fwd = AttentionForward(q, k, v, p);
          ASSERT_EQ(fwd.impl, chosen);
          const AttentionGrads g = AttentionBackward(dout, q, k, v, fwd, p);

          const at::Tensor q64 = q.to(at::kDouble), k64 = k.to(at::kDouble), v64 = v.to(at::kDouble);
          const AttentionForwardResult ref = AttentionForwardReference(q64, k64, v64, p);
          const AttentionGrads rg = AttentionBackwardReference(dout.to(at::kDouble), q64, k64, v64, p);
          const Tolerance out_tol = testing::ToleranceFor(t);
          EXPECT_TRUE(AllClose(fwd.out, ref.out, out_tol));
          const Tolerance dq_tol = GradTolerance(rg.dq, t, rg), dk_tol = GradTolerance(rg.dk, t, rg),
                          dv_tol = GradTolerance(rg.dv, t, rg);
          EXPECT_TRUE(AllClose(g.dq, rg.dq, dq_tol));
          EXPECT_TRUE(AllClose(g.dk, rg.dk, dk_tol));
          EXPECT_TRUE(AllClose(g.dv, rg.dv, dv_tol));
          ASSERT_EQ(fwd.lse.numel(), c.b * c.hq * c.sq) << "lse " << fwd.lse.sizes();
          const at::Tensor lse = fwd.lse.reshape({c.b, c.hq, c.sq}).to(at::kDouble);
          const at::Tensor finite = ref.lse.isfinite();
          EXPECT_TRUE(AllClose(lse.masked_select(finite), ref.lse.masked_select(finite), Tolerance{1e-3, 1e-2}));
          std::printf("  %-70s ran=%-6s worst err/tol: out %.2f dq %.2f dk %.2f dv %.2f\n", name.c_str(),
                      AttentionImplName(fwd.impl), WorstRatio(fwd.out, ref.out, out_tol),
                      WorstRatio(g.dq, rg.dq, dq_tol), WorstRatio(g.dk, rg.dk, dk_tol),
                      WorstRatio(g.dv, rg.dv, dv_tol));
          ++ran;
        }
      }
    }
  }
  EXPECT_GT(ran, 0);
}

struct PackedCase {
  std::vector<int> lq, lk;
  int64_t hq, hkv, d;
  bool causal;
};

TEST(AttentionGpu, PackedForwardBackwardMatchReference) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<PackedCase> cases = {
      {{1, 17, 64, 5, 130}, {1, 17, 64, 5, 130}, 8, 2, 64, true},
      {{1, 17, 64, 5, 130}, {1, 17, 64, 5, 130}, 8, 8, 128, false},
      {{3, 40, 7}, {50, 40, 9}, 4, 2, 128, true},  // decoding-like: fewer queries than keys, bottom-right
      {{3, 40, 7}, {50, 2, 9}, 4, 1, 64, false},
  };
  for (const PackedCase& c : cases) {
    for (at::ScalarType t : {at::kBFloat16, at::kHalf}) {
      std::vector<int> cq = {0}, ck = {0};
      int max_q = 0, max_k = 0;
      for (size_t i = 0; i < c.lq.size(); ++i) {
        cq.push_back(cq.back() + c.lq[i]);
        ck.push_back(ck.back() + c.lk[i]);
        max_q = std::max(max_q, c.lq[i]);
        max_k = std::max(max_k, c.lk[i]);
      }
      const PackedSequences seqs{at::tensor(cq, at::kInt).to(kCuda), at::tensor(ck, at::kInt).to(kCuda), max_q, max_k};
      const AttentionParams p{1.0 / std::sqrt(static_cast<double>(c.d)),
                              c.causal ? AttentionMask::kCausal : AttentionMask::kNone, AttentionImpl::kAuto};
      char name[160];
      std::snprintf(name, sizeof(name), "packed n=%zu total_q=%d total_k=%d hq=%ld hkv=%ld d=%ld %s %s", c.lq.size(),
                    cq.back(), ck.back(), c.hq, c.hkv, c.d, c.causal ? "causal" : "full", c10::toString(t));
      SCOPED_TRACE(name);
      at::manual_seed(static_cast<uint64_t>(cq.back()));
      const auto opts = at::TensorOptions().dtype(t).device(kCuda);
      const at::Tensor q = at::randn({cq.back(), c.hq, c.d}, opts), k = at::randn({ck.back(), c.hkv, c.d}, opts),
                       v = at::randn({ck.back(), c.hkv, c.d}, opts), dout = at::randn({cq.back(), c.hq, c.d}, opts);
      const AttentionForwardResult fwd = PackedAttentionForward(q, k, v, seqs, p);
      EXPECT_EQ(fwd.impl, AttentionImpl::kFlash);
      const AttentionGrads g = PackedAttentionBackward(dout, q, k, v, fwd, seqs, p);
      const at::Tensor q64 = q.to(at::kDouble), k64 = k.to(at::kDouble), v64 = v.to(at::kDouble);
      const AttentionForwardResult ref = PackedAttentionForwardReference(q64, k64, v64, seqs, p);
      const AttentionGrads rg = PackedAttentionBackwardReference(dout.to(at::kDouble), q64, k64, v64, seqs, p);
      const Tolerance out_tol = testing::ToleranceFor(t);
      EXPECT_TRUE(AllClose(fwd.out, ref.out, out_tol));
      EXPECT_TRUE(AllClose(g.dq, rg.dq, GradTolerance(rg.dq, t, rg)));
      EXPECT_TRUE(AllClose(g.dk, rg.dk, GradTolerance(rg.dk, t, rg)));
      EXPECT_TRUE(AllClose(g.dv, rg.dv, GradTolerance(rg.dv, t, rg)));
      if (fwd.lse.sizes() == ref.lse.sizes()) {  // flash's varlen lse is [hq, total_q] like the reference
        EXPECT_TRUE(AllClose(fwd.lse, ref.lse, Tolerance{1e-3, 1e-2}));
      }
      std::printf("  %-70s lse %s worst err/tol: out %.2f dq %.2f dk %.2f dv %.2f\n", name,
                  fwd.lse.sizes() == ref.lse.sizes() ? "checked" : "(other layout)",
                  WorstRatio(fwd.out, ref.out, out_tol), WorstRatio(g.dq, rg.dq, GradTolerance(rg.dq, t, rg)),
                  WorstRatio(g.dk, rg.dk, GradTolerance(rg.dk, t, rg)), WorstRatio(g.dv, rg.dv, GradTolerance(rg.dv, t, rg)));
    }
  }
}

// The autograd wrapper on CUDA, on the strided views SelfAttention passes, with a contiguous incoming gradient
// (the cuDNN backward needs it in out's layout: Note [Attention layouts]).
TEST(AttentionGpu, AutogradWrapperOnStridedViews) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  for (AttentionImpl impl : {AttentionImpl::kCudnn, AttentionImpl::kFlash}) {
    SCOPED_TRACE(AttentionImplName(impl));
    const int64_t s = 96, b = 2, hq = 8, hkv = 2, d = 128;
    at::manual_seed(21);
    const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
    const at::Tensor q = at::randn({s, b, hq, d}, opts).requires_grad_(true);
    const at::Tensor k = at::randn({s, b, hkv, d}, opts).requires_grad_(true);
    const at::Tensor v = at::randn({s, b, hkv, d}, opts).requires_grad_(true);
    const at::Tensor w = at::randn({s, b, hq, d}, opts);
    const AttentionParams p{1.0 / std::sqrt(128.0), AttentionMask::kCausal, impl};
    const at::Tensor out = FusedAttention(q.permute({1, 2, 0, 3}), k.permute({1, 2, 0, 3}), v.permute({1, 2, 0, 3}), p);
    (out.permute({2, 0, 1, 3}) * w).sum().backward();

    auto bhsd = [](const at::Tensor& t) { return t.detach().permute({1, 2, 0, 3}).to(at::kDouble); };
    const AttentionGrads rg = AttentionBackwardReference(bhsd(w), bhsd(q), bhsd(k), bhsd(v), p);
    EXPECT_TRUE(AllClose(out, AttentionForwardReference(bhsd(q), bhsd(k), bhsd(v), p).out,
                         testing::ToleranceFor(at::kBFloat16)));
    EXPECT_TRUE(AllClose(bhsd(q.grad()), rg.dq, GradTolerance(rg.dq, at::kBFloat16, rg)));
    EXPECT_TRUE(AllClose(bhsd(k.grad()), rg.dk, GradTolerance(rg.dk, at::kBFloat16, rg)));
    EXPECT_TRUE(AllClose(bhsd(v.grad()), rg.dv, GradTolerance(rg.dv, at::kBFloat16, rg)));
  }
}

TEST(AttentionGpu, BadInputsAreOneClearError) {
  MEGATRON_SKIP_WITHOUT_CUDA_DEVICE();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
  const at::Tensor q = at::randn({1, 2, 8, 64}, f32);
  EXPECT_THROW(AttentionForward(q, q, q, AttentionParams{}), c10::Error);  // float32 is not a CUDA dtype
  const at::Tensor h = q.to(at::kHalf), hk = at::randn({1, 3, 8, 64}, f32).to(at::kHalf);
  EXPECT_THROW(AttentionForward(h, hk, hk, AttentionParams{}), c10::Error);  // 2 heads over 3 kv heads
}

}  // namespace
}  // namespace megatron::fusions
