// The float64 reference of fused attention (the semantic definition in attention.h), the input checks every
// implementation shares, and the kernel choice. Plain ATen: runs on any device.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isinf.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <limits>
#include <vector>

#include "megatron/core/fusions/attention/attention.h"

namespace megatron::fusions {
namespace {

bool IsHalf(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// Scores after scale and mask, the softmax probabilities and the log-sum-exp, float64, with the kv heads
// expanded to hq (the reference may spend the memory; the kernels do not).
struct Probabilities {
  at::Tensor k;    // [b, hq, sk, d] float64
  at::Tensor v;    // [b, hq, sk, d] float64
  at::Tensor p;    // [b, hq, sq, sk] float64, rows of a query without keys are zero
  at::Tensor lse;  // [b, hq, sq] float64, -inf for a query without keys
};

Probabilities Softmax(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& params) {
  const int64_t g = q.size(1) / k.size(1), sq = q.size(2), sk = k.size(2);
  Probabilities r;
  r.k = k.to(at::kDouble).repeat_interleave(g, 1);
  r.v = v.to(at::kDouble).repeat_interleave(g, 1);
  at::Tensor s = at::matmul(q.to(at::kDouble), r.k.transpose(-2, -1)) * params.scale;
  if (params.mask == AttentionMask::kCausal) {
    // Note [Bottom-right causal]: key j is visible to query i iff j <= i + (sk - sq).
    const at::Tensor visible = at::ones({sq, sk}, q.options().dtype(at::kBool)).tril(sk - sq);
    s = s.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
  }
  r.lse = at::logsumexp(s, -1);  // -inf where a row has no key
  // exp(-inf - 0) = 0 for such rows instead of exp(-inf + inf) = NaN.
  const at::Tensor shift = at::where(at::isinf(r.lse), at::zeros({}, r.lse.options()), r.lse);
  r.p = at::exp(s - shift.unsqueeze(-1));
  return r;
}

void CheckPackedSequences(const at::Tensor& q, const at::Tensor& k, const PackedSequences& seqs) {
  for (const at::Tensor* cu : {&seqs.cu_seqlens_q, &seqs.cu_seqlens_k}) {
    const char* name = cu == &seqs.cu_seqlens_q ? "cu_seqlens_q" : "cu_seqlens_k";
    TORCH_CHECK(cu->defined() && cu->dim() == 1 && cu->numel() >= 2 && cu->scalar_type() == at::kInt,
                "attention (packed): ", name, " must be int32 [n + 1] with n >= 1 sequences, got ",
                cu->defined() ? cu->sizes() : at::IntArrayRef{}, " ",
                cu->defined() ? c10::toString(cu->scalar_type()) : "undefined");
    TORCH_CHECK(cu->device() == q.device(), "attention (packed): ", name, " is on ", cu->device(),
                " but q is on ", q.device(), " (the kernels read it on the device)");
  }
  TORCH_CHECK(seqs.cu_seqlens_q.numel() == seqs.cu_seqlens_k.numel(), "attention (packed): cu_seqlens_q has ",
              seqs.cu_seqlens_q.numel() - 1, " sequences but cu_seqlens_k has ", seqs.cu_seqlens_k.numel() - 1);
  TORCH_CHECK(seqs.max_seqlen_q >= 1 && seqs.max_seqlen_q <= q.size(0) && seqs.max_seqlen_k >= 1 &&
                  seqs.max_seqlen_k <= k.size(0),
              "attention (packed): max_seqlen_q=", seqs.max_seqlen_q, " / max_seqlen_k=", seqs.max_seqlen_k,
              " must be in [1, total] (total_q=", q.size(0), ", total_k=", k.size(0), ")");
}

}  // namespace

const char* AttentionImplName(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::kAuto:
      return "auto";
    case AttentionImpl::kCudnn:
      return "cudnn";
    case AttentionImpl::kFlash:
      return "flash";
    case AttentionImpl::kReference:
      return "reference";
  }
  return "?";
}

void CheckAttentionInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                          const PackedSequences* seqs, bool allow_wide_dtypes) {
  const char* form = seqs != nullptr ? "attention (packed)" : "attention";
  TORCH_CHECK(q.defined() && k.defined() && v.defined(), form, ": q, k and v must be defined");
  const int64_t dims = seqs != nullptr ? 3 : 4;
  const char* layout = seqs != nullptr ? "q [total_q, hq, d], k/v [total_k, hkv, d]"
                                       : "q [b, hq, sq, d], k/v [b, hkv, sk, d]";
  TORCH_CHECK(q.dim() == dims && k.dim() == dims && v.dim() == dims, form, ": expected ", layout, ", got q ",
              q.sizes(), " k ", k.sizes(), " v ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), form, ": k ", k.sizes(), " and v ", v.sizes(), " must have the same shape");
  const int64_t hq = q.size(1), hkv = k.size(1);  // dimension 1 holds the heads in both forms
  if (seqs == nullptr) {
    TORCH_CHECK(q.size(0) == k.size(0), form, ": q has batch ", q.size(0), " but k has ", k.size(0), " (q ",
                q.sizes(), ", k ", k.sizes(), ")");
    TORCH_CHECK(q.size(0) >= 1 && q.size(2) >= 1 && k.size(2) >= 1 && hq >= 1, form,
                ": b, hq, sq and sk must be >= 1, got q ", q.sizes(), " k ", k.sizes());
  } else {
    TORCH_CHECK(q.size(0) >= 1 && k.size(0) >= 1 && hq >= 1, form, ": total_q, total_k and hq must be >= 1, got q ",
                q.sizes(), " k ", k.sizes());
  }
  TORCH_CHECK(hkv >= 1 && hq % hkv == 0, form, ": the query heads (", hq, ") must be a multiple of the key/value heads (",
              hkv, ") for grouped-query attention; got q ", q.sizes(), " k ", k.sizes());
  const int64_t d = q.size(-1);
  TORCH_CHECK(k.size(-1) == d, form, ": q has head dim ", d, " but k/v have ", k.size(-1));
  TORCH_CHECK(d % kAttentionHeadDimMultiple == 0 && d >= kAttentionHeadDimMultiple && d <= kAttentionMaxHeadDim,
              form, ": head dim ", d, " is not supported: it must be a multiple of ", kAttentionHeadDimMultiple,
              " in [", kAttentionHeadDimMultiple, ", ", kAttentionMaxHeadDim, "] (pad the heads or use the unfused path)");
  const at::ScalarType t = q.scalar_type();
  TORCH_CHECK(k.scalar_type() == t && v.scalar_type() == t, form, ": q, k and v must share a dtype, got ", t, ", ",
              k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(IsHalf(t) || (allow_wide_dtypes && (t == at::kFloat || t == at::kDouble)), form, ": dtype ", t,
              " is not supported ", allow_wide_dtypes ? "(bfloat16, float16, float32 or float64)"
                                                      : "on CUDA (bfloat16 or float16; cast or use the unfused path)");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), form, ": q, k and v must be on one device, got ",
              q.device(), ", ", k.device(), ", ", v.device());
  TORCH_CHECK(q.stride(-1) == 1 && k.stride(-1) == 1 && v.stride(-1) == 1, form,
              ": the head dim must be contiguous (stride 1), got strides q ", q.strides(), " k ", k.strides(), " v ",
              v.strides());
  if (dout.defined()) {
    TORCH_CHECK(dout.sizes() == q.sizes() && dout.scalar_type() == t && dout.device() == q.device(), form,
                ": dout must match q (", q.sizes(), " ", t, " on ", q.device(), "), got ", dout.sizes(), " ",
                dout.scalar_type(), " on ", dout.device());
  }
  if (seqs != nullptr) CheckPackedSequences(q, k, *seqs);
}

AttentionImpl ChooseAttentionImpl(const AttentionShape& shape, const AttentionParams& params) {
  const bool causal_not_square = params.mask == AttentionMask::kCausal && shape.sq != shape.sk;
  const bool cudnn_ok = !shape.packed && shape.d <= kCudnnAttentionMaxHeadDim && shape.sk > 1 && !causal_not_square;
  switch (params.impl) {
    case AttentionImpl::kAuto:
      return cudnn_ok ? AttentionImpl::kCudnn : AttentionImpl::kFlash;
    case AttentionImpl::kFlash:
      return AttentionImpl::kFlash;
    case AttentionImpl::kCudnn:
      TORCH_CHECK(!shape.packed, "attention: impl=cudnn does not take the packed (cu_seqlens) form; use flash or auto");
      TORCH_CHECK(shape.d <= kCudnnAttentionMaxHeadDim, "attention: impl=cudnn takes head dims up to ",
                  kCudnnAttentionMaxHeadDim, " (its sm_90 backward), got ", shape.d, "; use flash or auto");
      TORCH_CHECK(shape.sk > 1, "attention: impl=cudnn has no kernel for one key (sk == 1); use flash or auto");
      TORCH_CHECK(!causal_not_square, "attention: impl=cudnn aligns the causal mask top-left, so causal with sq (",
                  shape.sq, ") != sk (", shape.sk, ") would differ from the bottom-right contract; use flash or auto");
      return AttentionImpl::kCudnn;
    case AttentionImpl::kReference:
      break;
  }
  TORCH_CHECK(false, "attention: impl=reference is what CPU tensors run; for CUDA tensors use auto, cudnn or flash");
}

AttentionForwardResult AttentionForwardReference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const AttentionParams& params) {
  CheckAttentionInputs(q, k, v, at::Tensor(), nullptr, /*allow_wide_dtypes=*/true);
  const Probabilities r = Softmax(q, k, v, params);
  AttentionForwardResult out;
  out.out = at::matmul(r.p, r.v).to(q.scalar_type());
  out.lse = r.lse;
  out.impl = AttentionImpl::kReference;
  return out;
}

AttentionGrads AttentionBackwardReference(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const AttentionParams& params) {
  TORCH_CHECK(dout.defined(), "attention backward: dout must be defined");
  CheckAttentionInputs(q, k, v, dout, nullptr, /*allow_wide_dtypes=*/true);
  const Probabilities r = Softmax(q, k, v, params);
  const at::Tensor q64 = q.to(at::kDouble), d_out = dout.to(at::kDouble);
  const at::Tensor out = at::matmul(r.p, r.v);
  // dP = dO V^T; dS = P * (dP - rowsum(dO * O)) (the softmax Jacobian); S = scale * Q K^T.
  const at::Tensor dp = at::matmul(d_out, r.v.transpose(-2, -1));
  const at::Tensor ds = r.p * (dp - (d_out * out).sum(-1, /*keepdim=*/true)) * params.scale;
  const int64_t b = q.size(0), hkv = k.size(1), g = q.size(1) / hkv, sk = k.size(2), d = q.size(3);
  const at::Tensor dv = at::matmul(r.p.transpose(-2, -1), d_out);  // [b, hq, sk, d]
  const at::Tensor dk = at::matmul(ds.transpose(-2, -1), q64);
  AttentionGrads grads;
  grads.dq = at::matmul(ds, r.k).to(q.scalar_type());
  // A kv head serves the g query heads of its group (repeat_interleave order): sum their gradients.
  grads.dk = dk.view({b, hkv, g, sk, d}).sum(2).to(k.scalar_type());
  grads.dv = dv.view({b, hkv, g, sk, d}).sum(2).to(v.scalar_type());
  return grads;
}

namespace {

// Host copies of the boundaries.
std::vector<int64_t> Boundaries(const at::Tensor& cu) {
  const at::Tensor c = cu.to(at::kCPU).to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void CheckBoundaries(const std::vector<int64_t>& cu, int64_t total, int64_t max_len, const char* name) {
  TORCH_CHECK(cu.front() == 0 && cu.back() == total, "attention (packed): ", name, " must run from 0 to ", total,
              ", got ", cu.front(), " .. ", cu.back());
  for (size_t i = 0; i + 1 < cu.size(); ++i) {
    TORCH_CHECK(cu[i + 1] >= cu[i] && cu[i + 1] - cu[i] <= max_len, "attention (packed): ", name, " sequence ", i,
                " has length ", cu[i + 1] - cu[i], " (must be in [0, max_seqlen=", max_len, "])");
  }
}

// [len, h, d] <-> [1, h, len, d]
at::Tensor ToDense(const at::Tensor& t) { return t.transpose(0, 1).unsqueeze(0); }
at::Tensor FromDense(const at::Tensor& t) { return t.squeeze(0).transpose(0, 1); }

}  // namespace

AttentionForwardResult PackedAttentionForwardReference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const PackedSequences& seqs, const AttentionParams& params) {
  CheckAttentionInputs(q, k, v, at::Tensor(), &seqs, /*allow_wide_dtypes=*/true);
  const std::vector<int64_t> cq = Boundaries(seqs.cu_seqlens_q), ck = Boundaries(seqs.cu_seqlens_k);
  CheckBoundaries(cq, q.size(0), seqs.max_seqlen_q, "cu_seqlens_q");
  CheckBoundaries(ck, k.size(0), seqs.max_seqlen_k, "cu_seqlens_k");
  std::vector<at::Tensor> outs, lses;
  for (size_t i = 0; i + 1 < cq.size(); ++i) {
    const int64_t lq = cq[i + 1] - cq[i], lk = ck[i + 1] - ck[i];
    if (lq == 0) continue;
    if (lk == 0) {  // queries without keys: zeros, lse -inf
      outs.push_back(at::zeros({lq, q.size(1), q.size(2)}, q.options()));
      lses.push_back(at::full({q.size(1), lq}, -std::numeric_limits<double>::infinity(), q.options().dtype(at::kDouble)));
      continue;
    }
    const AttentionForwardResult r = AttentionForwardReference(
        ToDense(q.narrow(0, cq[i], lq)), ToDense(k.narrow(0, ck[i], lk)), ToDense(v.narrow(0, ck[i], lk)), params);
    outs.push_back(FromDense(r.out));
    lses.push_back(r.lse.squeeze(0));  // [hq, lq]
  }
  AttentionForwardResult out;
  out.out = at::cat(outs, 0).contiguous();
  out.lse = at::cat(lses, 1).contiguous();  // [hq, total_q]
  out.impl = AttentionImpl::kReference;
  return out;
}

AttentionGrads PackedAttentionBackwardReference(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const PackedSequences& seqs,
                                                const AttentionParams& params) {
  TORCH_CHECK(dout.defined(), "attention backward (packed): dout must be defined");
  CheckAttentionInputs(q, k, v, dout, &seqs, /*allow_wide_dtypes=*/true);
  const std::vector<int64_t> cq = Boundaries(seqs.cu_seqlens_q), ck = Boundaries(seqs.cu_seqlens_k);
  CheckBoundaries(cq, q.size(0), seqs.max_seqlen_q, "cu_seqlens_q");
  CheckBoundaries(ck, k.size(0), seqs.max_seqlen_k, "cu_seqlens_k");
  AttentionGrads grads;
  grads.dq = at::zeros(q.sizes(), q.options());
  grads.dk = at::zeros(k.sizes(), k.options());
  grads.dv = at::zeros(v.sizes(), v.options());
  for (size_t i = 0; i + 1 < cq.size(); ++i) {
    const int64_t lq = cq[i + 1] - cq[i], lk = ck[i + 1] - ck[i];
    if (lq == 0 || lk == 0) continue;  // nothing attends: zero gradients
    const AttentionGrads g = AttentionBackwardReference(
        ToDense(dout.narrow(0, cq[i], lq)), ToDense(q.narrow(0, cq[i], lq)), ToDense(k.narrow(0, ck[i], lk)),
        ToDense(v.narrow(0, ck[i], lk)), params);
    grads.dq.narrow(0, cq[i], lq).copy_(FromDense(g.dq));
    grads.dk.narrow(0, ck[i], lk).copy_(FromDense(g.dk));
    grads.dv.narrow(0, ck[i], lk).copy_(FromDense(g.dv));
  }
  return grads;
}

}  // namespace megatron::fusions
