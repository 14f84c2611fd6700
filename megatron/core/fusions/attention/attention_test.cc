// The float64 reference of fused attention (the definition every CUDA path is tested against) checked against
// independent recomputations: scalar loops, finite differences, autograd of plain ATen ops, and the packed form
// against running each sequence alone. Plus the kernel-choice rule and the input errors.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "megatron/core/fusions/attention/attention.h"
#include "megatron/core/fusions/attention/attention_autograd.h"
#include "megatron/core/fusions/testing/all_close.h"

namespace megatron::fusions {
namespace {

using testing::AllClose;
using testing::Tolerance;

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);
constexpr Tolerance kExact{1e-12, 1e-12};

struct Dims {
  int64_t b, hq, hkv, sq, sk, d;
};

struct Inputs {
  at::Tensor q, k, v;
};

Inputs RandomInputs(Dims s, uint64_t seed) {
  at::manual_seed(seed);
  return {at::randn({s.b, s.hq, s.sq, s.d}, kF64), at::randn({s.b, s.hkv, s.sk, s.d}, kF64),
          at::randn({s.b, s.hkv, s.sk, s.d}, kF64)};
}

// Attention written out loop by loop: nothing shared with the reference but the definition.
struct Naive {
  at::Tensor out;  // [b, hq, sq, d]
  at::Tensor lse;  // [b, hq, sq]
};

Naive NaiveAttention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, double scale,
                     bool causal) {
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t b = q.size(0), hq = q.size(1), sq = q.size(2), d = q.size(3), hkv = k.size(1), sk = k.size(2);
  const int64_t g = hq / hkv;
  Naive r{at::zeros({b, hq, sq, d}, kF64), at::zeros({b, hq, sq}, kF64)};
  auto qa = q.accessor<double, 4>();
  auto ka = k.accessor<double, 4>();
  auto va = v.accessor<double, 4>();
  auto oa = r.out.accessor<double, 4>();
  auto la = r.lse.accessor<double, 3>();
  for (int64_t n = 0; n < b; ++n) {
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t kh = h / g;
      for (int64_t i = 0; i < sq; ++i) {
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < sk; ++j) {
          if (causal && j > i + (sk - sq)) continue;  // bottom-right
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qa[n][h][i][c] * ka[n][kh][j][c];
          s.push_back(dot * scale);
          keys.push_back(j);
        }
        if (keys.empty()) {
          la[n][h][i] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double m = s[0];
        for (double x : s) m = std::max(m, x);
        double z = 0;
        for (double x : s) z += std::exp(x - m);
        la[n][h][i] = m + std::log(z);
        for (size_t t = 0; t < keys.size(); ++t) {
          const double p = std::exp(s[t] - m) / z;
          for (int64_t c = 0; c < d; ++c) oa[n][h][i][c] += p * va[n][kh][keys[t]][c];
        }
      }
    }
  }
  return r;
}

AttentionParams Params(double scale, bool causal) {
  return AttentionParams{scale, causal ? AttentionMask::kCausal : AttentionMask::kNone, AttentionImpl::kAuto};
}

// Every shape the CUDA test also runs, shrunk: odd lengths, sq < sk (decoding), sq > sk (rows without keys),
// GQA, MQA, one key, one query.
std::vector<Dims> AwkwardDims() {
  return {{2, 4, 2, 5, 7, 8},  {1, 3, 3, 9, 9, 16}, {2, 6, 1, 4, 11, 8},
          {1, 2, 2, 7, 3, 8},  {1, 4, 2, 1, 6, 24}, {3, 2, 1, 6, 1, 8}};
}

TEST(AttentionReference, MatchesLoopByLoopRecomputation) {
  for (const Dims& s : AwkwardDims()) {
    for (bool causal : {false, true}) {
      const Inputs in = RandomInputs(s, 1 + s.sq * 31 + s.sk);
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
      const AttentionForwardResult r = AttentionForward(in.q, in.k, in.v, Params(scale, causal));
      const Naive n = NaiveAttention(in.q, in.k, in.v, scale, causal);
      SCOPED_TRACE("sq=" + std::to_string(s.sq) + " sk=" + std::to_string(s.sk) + " hq=" + std::to_string(s.hq) +
                   " hkv=" + std::to_string(s.hkv) + " causal=" + std::to_string(causal));
      EXPECT_EQ(r.impl, AttentionImpl::kReference);
      EXPECT_TRUE(AllClose(r.out, n.out, kExact));
      // lse: finite rows compared; rows without keys are -inf in both.
      const at::Tensor finite = n.lse.isfinite();
      EXPECT_TRUE(AllClose(r.lse.masked_select(finite), n.lse.masked_select(finite), kExact));
      EXPECT_TRUE(at::equal(r.lse.isfinite(), finite));
    }
  }
}

// Note [Bottom-right causal], spelled out: with uniform scores (q = 0) a query's output is the mean of the value
// rows it sees. sq = 2, sk = 4: query 0 sees keys 0..2, query 1 sees 0..3. sq = 3, sk = 2: query 0 sees nothing.
TEST(AttentionReference, CausalIsBottomRightAligned) {
  const at::Tensor q = at::zeros({1, 1, 2, 8}, kF64);
  const at::Tensor v = at::arange(4, kF64).view({1, 1, 4, 1}).expand({1, 1, 4, 8}).contiguous();
  const at::Tensor k = at::randn({1, 1, 4, 8}, kF64);
  const at::Tensor out = AttentionForward(q, k, v, Params(1.0, true)).out;
  EXPECT_NEAR(out[0][0][0][0].item<double>(), (0 + 1 + 2) / 3.0, 1e-14);
  EXPECT_NEAR(out[0][0][1][0].item<double>(), (0 + 1 + 2 + 3) / 4.0, 1e-14);

  const at::Tensor q3 = at::zeros({1, 1, 3, 8}, kF64);
  const at::Tensor v2 = v.narrow(2, 0, 2), k2 = k.narrow(2, 0, 2);
  const AttentionForwardResult r = AttentionForward(q3, k2, v2, Params(1.0, true));
  EXPECT_TRUE(at::equal(r.out[0][0][0], at::zeros({8}, kF64)));  // no key: zeros, not NaN
  EXPECT_TRUE(std::isinf(r.lse[0][0][0].item<double>()));
  EXPECT_NEAR(r.out[0][0][1][0].item<double>(), 0.0, 1e-14);  // sees key 0
  EXPECT_NEAR(r.out[0][0][2][0].item<double>(), 0.5, 1e-14);  // sees keys 0, 1
}

TEST(AttentionReference, GroupedQueryAttentionEqualsExpandedHeads) {
  const Dims s{2, 6, 2, 5, 8, 8};
  const Inputs in = RandomInputs(s, 7);
  const at::Tensor dout = at::randn({s.b, s.hq, s.sq, s.d}, kF64);
  const AttentionParams p = Params(0.3, true);
  const at::Tensor ke = in.k.repeat_interleave(3, 1), ve = in.v.repeat_interleave(3, 1);
  EXPECT_TRUE(AllClose(AttentionForward(in.q, in.k, in.v, p).out, AttentionForward(in.q, ke, ve, p).out, kExact));
  const AttentionGrads g = AttentionBackwardReference(dout, in.q, in.k, in.v, p);
  const AttentionGrads ge = AttentionBackwardReference(dout, in.q, ke, ve, p);
  EXPECT_TRUE(AllClose(g.dq, ge.dq, kExact));
  EXPECT_TRUE(AllClose(g.dk, ge.dk.view({2, 2, 3, 8, 8}).sum(2), kExact));
  EXPECT_TRUE(AllClose(g.dv, ge.dv.view({2, 2, 3, 8, 8}).sum(2), kExact));
}

// Central differences of L = sum(out * w) against the reference backward with dout = w, every element of q, k, v.
TEST(AttentionReference, BackwardMatchesFiniteDifferences) {
  for (const Dims& s : {Dims{1, 2, 1, 3, 4, 8}, Dims{2, 2, 2, 4, 2, 8}}) {
    for (bool causal : {false, true}) {
      Inputs in = RandomInputs(s, 11 + s.sk);
      const at::Tensor w = at::randn({s.b, s.hq, s.sq, s.d}, kF64);
      const AttentionParams p = Params(0.5, causal);
      const AttentionGrads g = AttentionBackward(w, in.q, in.k, in.v, AttentionForward(in.q, in.k, in.v, p), p);
      auto loss = [&] { return (AttentionForwardReference(in.q, in.k, in.v, p).out * w).sum().item<double>(); };
      constexpr double kEps = 1e-6;
      for (auto [x, grad, name] : {std::tuple{&in.q, g.dq, "dq"}, std::tuple{&in.k, g.dk, "dk"},
                                   std::tuple{&in.v, g.dv, "dv"}}) {
        at::Tensor numeric = at::zeros_like(*x);
        double* xp = x->data_ptr<double>();
        for (int64_t i = 0; i < x->numel(); ++i) {
          const double keep = xp[i];
          xp[i] = keep + kEps;
          const double up = loss();
          xp[i] = keep - kEps;
          const double down = loss();
          xp[i] = keep;
          numeric.data_ptr<double>()[i] = (up - down) / (2 * kEps);
        }
        SCOPED_TRACE(std::string(name) + " causal=" + std::to_string(causal) + " sk=" + std::to_string(s.sk));
        EXPECT_TRUE(AllClose(grad, numeric, Tolerance{1e-6, 1e-7}));
      }
    }
  }
}

// The autograd wrapper (what the fused backend uses in training) against autograd of plain ATen ops.
TEST(AttentionAutograd, GradientsMatchAutogradOfPlainOps) {
  const Dims s{2, 4, 2, 6, 9, 16};
  for (bool causal : {false, true}) {
    Inputs in = RandomInputs(s, 5);
    const at::Tensor w = at::randn({s.b, s.hq, s.sq, s.d}, kF64);
    for (at::Tensor* t : {&in.q, &in.k, &in.v}) t->requires_grad_(true);
    const double scale = 0.25;
    (FusedAttention(in.q, in.k, in.v, Params(scale, causal)) * w).sum().backward();
    const at::Tensor dq = in.q.grad().clone(), dk = in.k.grad().clone(), dv = in.v.grad().clone();
    for (at::Tensor* t : {&in.q, &in.k, &in.v}) t->mutable_grad().reset();

    const at::Tensor ke = in.k.repeat_interleave(2, 1), ve = in.v.repeat_interleave(2, 1);
    at::Tensor scores = at::matmul(in.q, ke.transpose(-2, -1)) * scale;
    if (causal) {
      const at::Tensor visible = at::ones({s.sq, s.sk}, kF64.dtype(at::kBool)).tril(s.sk - s.sq);
      scores = scores.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
    }
    (at::matmul(at::softmax(scores, -1), ve) * w).sum().backward();
    EXPECT_TRUE(AllClose(dq, in.q.grad(), kExact));
    EXPECT_TRUE(AllClose(dk, in.k.grad(), kExact));
    EXPECT_TRUE(AllClose(dv, in.v.grad(), kExact));
  }
}

// The packed (THD) form equals each sequence run alone, forward and backward, including uneven q and k lengths
// per sequence and (causal) a sequence with more queries than keys.
TEST(AttentionPacked, EqualsEachSequenceAlone) {
  const int64_t hq = 4, hkv = 2, d = 8;
  const std::vector<int64_t> lq = {3, 1, 6, 4}, lk = {3, 5, 6, 2};
  std::vector<int> cq = {0}, ck = {0};
  for (size_t i = 0; i < lq.size(); ++i) {
    cq.push_back(cq.back() + static_cast<int>(lq[i]));
    ck.push_back(ck.back() + static_cast<int>(lk[i]));
  }
  const auto i32 = at::TensorOptions().dtype(at::kInt);
  const PackedSequences seqs{at::tensor(cq, i32), at::tensor(ck, i32), 6, 6};
  at::manual_seed(9);
  at::Tensor q = at::randn({cq.back(), hq, d}, kF64), k = at::randn({ck.back(), hkv, d}, kF64),
             v = at::randn({ck.back(), hkv, d}, kF64), dout = at::randn({cq.back(), hq, d}, kF64);
  for (bool causal : {false, true}) {
    const AttentionParams p = Params(0.4, causal);
    const AttentionForwardResult packed = PackedAttentionForward(q, k, v, seqs, p);
    const AttentionGrads g = PackedAttentionBackward(dout, q, k, v, packed, seqs, p);
    ASSERT_EQ(packed.lse.sizes(), (at::IntArrayRef{hq, cq.back()}));
    for (size_t i = 0; i < lq.size(); ++i) {
      auto dense = [](const at::Tensor& t) { return t.transpose(0, 1).unsqueeze(0); };
      const at::Tensor qi = dense(q.narrow(0, cq[i], lq[i])), ki = dense(k.narrow(0, ck[i], lk[i])),
                       vi = dense(v.narrow(0, ck[i], lk[i])), di = dense(dout.narrow(0, cq[i], lq[i]));
      const Naive n = NaiveAttention(qi, ki, vi, 0.4, causal);
      const AttentionGrads gi = AttentionBackwardReference(di, qi, ki, vi, p);
      SCOPED_TRACE("sequence " + std::to_string(i) + " causal=" + std::to_string(causal));
      EXPECT_TRUE(AllClose(dense(packed.out.narrow(0, cq[i], lq[i])), n.out, kExact));
      EXPECT_TRUE(AllClose(dense(g.dq.narrow(0, cq[i], lq[i])), gi.dq, kExact));
      EXPECT_TRUE(AllClose(dense(g.dk.narrow(0, ck[i], lk[i])), gi.dk, kExact));
      EXPECT_TRUE(AllClose(dense(g.dv.narrow(0, ck[i], lk[i])), gi.dv, kExact));
    }
    // And through the autograd wrapper.
    const at::Tensor qg = q.clone().requires_grad_(true);
    (FusedPackedAttention(qg, k, v, seqs, p) * dout).sum().backward();
    EXPECT_TRUE(AllClose(qg.grad(), g.dq, kExact));
  }
}

TEST(AttentionChoice, CudnnFirstFlashWhereCudnnCannot) {
  const AttentionParams causal = Params(1, true), none = Params(1, false);
  EXPECT_EQ(ChooseAttentionImpl({false, 16, 16, 2048, 2048, 128}, causal), AttentionImpl::kCudnn);
  EXPECT_EQ(ChooseAttentionImpl({false, 32, 8, 8192, 8192, 128}, causal), AttentionImpl::kCudnn);  // GQA
  EXPECT_EQ(ChooseAttentionImpl({false, 16, 16, 7, 300, 64}, none), AttentionImpl::kCudnn);
  EXPECT_EQ(ChooseAttentionImpl({false, 16, 16, 7, 300, 64}, causal), AttentionImpl::kFlash);  // bottom-right
  EXPECT_EQ(ChooseAttentionImpl({false, 16, 16, 1, 1, 64}, none), AttentionImpl::kFlash);       // sk == 1
  EXPECT_EQ(ChooseAttentionImpl({false, 16, 16, 512, 512, 256}, causal), AttentionImpl::kFlash);  // d > 128
  EXPECT_EQ(ChooseAttentionImpl({true, 16, 16, 512, 512, 128}, causal), AttentionImpl::kFlash);   // packed
  AttentionParams forced = causal;
  forced.impl = AttentionImpl::kFlash;
  EXPECT_EQ(ChooseAttentionImpl({false, 16, 16, 2048, 2048, 128}, forced), AttentionImpl::kFlash);
  forced.impl = AttentionImpl::kCudnn;
  EXPECT_THROW(ChooseAttentionImpl({true, 16, 16, 512, 512, 128}, forced), c10::Error);
  EXPECT_THROW(ChooseAttentionImpl({false, 16, 16, 7, 300, 64}, forced), c10::Error);
  EXPECT_THROW(ChooseAttentionImpl({false, 16, 16, 512, 512, 256}, forced), c10::Error);
  forced.impl = AttentionImpl::kReference;
  EXPECT_THROW(ChooseAttentionImpl({false, 16, 16, 512, 512, 128}, forced), c10::Error);
}

// One clear error per kind of bad input, naming what is wrong.
void ExpectError(const std::function<void()>& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos)
        << "error '" << e.what_without_backtrace() << "' does not mention '" << needle << "'";
  }
}

TEST(AttentionErrors, BadInputsAreOneClearError) {
  const Inputs in = RandomInputs({2, 4, 2, 5, 7, 8}, 3);
  const AttentionParams p = Params(1, true);
  ExpectError([&] { AttentionForward(in.q[0], in.k, in.v, p); }, "expected q [b, hq, sq, d]");
  ExpectError([&] { AttentionForward(in.q, in.k, in.v.narrow(2, 0, 6), p); }, "must have the same shape");
  ExpectError([&] { AttentionForward(in.q, in.k.narrow(0, 0, 1), in.v.narrow(0, 0, 1), p); }, "batch");
  ExpectError([&] { AttentionForward(in.q.narrow(1, 0, 3), in.k, in.v, p); }, "multiple of the key/value heads");
  ExpectError([&] { AttentionForward(in.q.narrow(-1, 0, 4), in.k.narrow(-1, 0, 4), in.v.narrow(-1, 0, 4), p); },
              "head dim 4 is not supported");
  const at::Tensor q12 = at::randn({1, 1, 3, 12}, kF64), k12 = at::randn({1, 1, 3, 12}, kF64);
  ExpectError([&] { AttentionForward(q12, k12, k12, p); }, "head dim 12 is not supported");
  const at::Tensor q264 = at::randn({1, 1, 2, 264}, kF64);
  ExpectError([&] { AttentionForward(q264, q264, q264, p); }, "head dim 264 is not supported");
  ExpectError([&] { AttentionForward(in.q.to(at::kFloat), in.k, in.v, p); }, "must share a dtype");
  ExpectError([&] { AttentionForward(in.q.to(at::kInt), in.k.to(at::kInt), in.v.to(at::kInt), p); },
              "dtype Int is not supported");
  ExpectError([&] { AttentionForward(in.q.transpose(-1, -2).contiguous().transpose(-1, -2), in.k, in.v, p); },
              "head dim must be contiguous");
  ExpectError([&] { AttentionBackwardReference(in.q.narrow(2, 0, 4), in.q, in.k, in.v, p); }, "dout must match q");
  AttentionParams cudnn = p;
  cudnn.impl = AttentionImpl::kCudnn;
  ExpectError([&] { AttentionForward(in.q, in.k, in.v, cudnn); }, "needs CUDA tensors");

  const at::Tensor q = at::randn({6, 4, 8}, kF64), k = at::randn({6, 2, 8}, kF64);
  const auto i32 = at::TensorOptions().dtype(at::kInt);
  const PackedSequences good{at::tensor(std::vector<int>{0, 2, 6}, i32), at::tensor(std::vector<int>{0, 2, 6}, i32),
                             4, 4};
  PackedSequences bad = good;
  bad.cu_seqlens_q = good.cu_seqlens_q.to(at::kLong);
  ExpectError([&] { PackedAttentionForward(q, k, k, bad, p); }, "cu_seqlens_q must be int32");
  bad = good;
  bad.cu_seqlens_k = at::tensor(std::vector<int>{0, 6}, i32);
  ExpectError([&] { PackedAttentionForward(q, k, k, bad, p); }, "sequences");
  bad = good;
  bad.cu_seqlens_q = at::tensor(std::vector<int>{0, 2, 5}, i32);
  ExpectError([&] { PackedAttentionForward(q, k, k, bad, p); }, "must run from 0 to 6");
  bad = good;
  bad.max_seqlen_q = 3;
  ExpectError([&] { PackedAttentionForward(q, k, k, bad, p); }, "max_seqlen=3");
  ExpectError([&] { PackedAttentionForward(q.unsqueeze(0), k, k, good, p); }, "expected q [total_q, hq, d]");
}

}  // namespace
}  // namespace megatron::fusions
