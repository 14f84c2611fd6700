// The CUDA path of fused attention: no kernel of ours, but ATen's two fused attention entry points, called
// directly (not through at::scaled_dot_product_attention's dispatcher) so that the choice is ours and stated
// (ChooseAttentionImpl), GQA stays unexpanded, causal keeps the bottom-right alignment, and the packed (THD) form
// reaches FlashAttention-2's varlen kernel:
//   kCudnn: at::_scaled_dot_product_cudnn_attention / _backward (cuDNN 9's fused flash attention, graph API)
//   kFlash: at::_scaled_dot_product_flash_attention / _backward (dense), at::_flash_attention_forward /
//           _flash_attention_backward with cu_seqlens (packed)
// Registered as the CUDA implementation of attention.h before main runs.
//
// Note [Attention layouts]: both ops take [b, h, s, d] with any strides whose last is 1 (flash works in
// [b, s, h, d] internally and hands back a transposed view; cuDNN allocates out in q's layout). The cuDNN backward
// expects dout in out's layout, so dout is copied into that layout when its strides differ (autograd may hand over
// a contiguous gradient for a transposed out).
#include <ATen/core/Tensor.h>
#include <ATen/ops/_flash_attention_backward.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention_backward.h>
#include <ATen/ops/_scaled_dot_product_flash_attention.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_backward.h>
#include <ATen/ops/empty_strided.h>

#include "megatron/core/fusions/attention/attention.h"

namespace megatron::fusions {
namespace {

AttentionShape ShapeOf(const at::Tensor& q, const at::Tensor& k, const PackedSequences* seqs) {
  AttentionShape s;
  s.packed = seqs != nullptr;
  s.hq = q.size(1);
  s.hkv = k.size(1);
  s.d = q.size(-1);
  s.sq = seqs != nullptr ? seqs->max_seqlen_q : q.size(2);
  s.sk = seqs != nullptr ? seqs->max_seqlen_k : k.size(2);
  return s;
}

// See Note [Attention layouts].
at::Tensor InLayoutOf(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  at::Tensor r = at::empty_strided(like.sizes(), like.strides(), like.options());
  r.copy_(t);
  return r;
}

AttentionForwardResult CudaAttentionForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const PackedSequences* seqs, const AttentionParams& params) {
  CheckAttentionInputs(q, k, v, at::Tensor(), seqs, /*allow_wide_dtypes=*/false);
  const bool causal = params.mask == AttentionMask::kCausal;
  AttentionForwardResult r;
  r.impl = ChooseAttentionImpl(ShapeOf(q, k, seqs), params);
  if (seqs != nullptr) {  // ChooseAttentionImpl: packed is always flash
    auto [out, lse, rng_state, unused, debug_mask] = at::_flash_attention_forward(
        q, k, v, seqs->cu_seqlens_q, seqs->cu_seqlens_k, seqs->max_seqlen_q, seqs->max_seqlen_k,
        /*dropout_p=*/0.0, causal, /*return_debug_mask=*/false, params.scale);
    r.out = out;
    r.lse = lse;
    r.rng_state = rng_state;
    r.rng_offset = unused;
    return r;
  }
  if (r.impl == AttentionImpl::kCudnn) {
    auto [out, lse, cum_q, cum_k, max_q, max_k, seed, offset, debug_mask] = at::_scaled_dot_product_cudnn_attention(
        q, k, v, /*attn_bias=*/std::nullopt, /*compute_log_sumexp=*/true, /*dropout_p=*/0.0, causal,
        /*return_debug_mask=*/false, params.scale);
    r.out = out;
    r.lse = lse;
    r.rng_state = seed;
    r.rng_offset = offset;
    return r;
  }
  auto [out, lse, cum_q, cum_k, max_q, max_k, rng_state, unused, debug_mask] = at::_scaled_dot_product_flash_attention(
      q, k, v, /*dropout_p=*/0.0, causal, /*return_debug_mask=*/false, params.scale);
  r.out = out;
  r.lse = lse;
  r.rng_state = rng_state;
  r.rng_offset = unused;
  return r;
}

AttentionGrads CudaAttentionBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const AttentionForwardResult& fwd,
                                     const PackedSequences* seqs, const AttentionParams& params) {
  TORCH_CHECK(dout.defined(), "attention backward: dout must be defined");
  CheckAttentionInputs(q, k, v, dout, seqs, /*allow_wide_dtypes=*/false);
  TORCH_CHECK(fwd.out.defined() && fwd.lse.defined() && fwd.out.sizes() == q.sizes(),
              "attention backward: fwd must be the forward result for these inputs (out ",
              fwd.out.defined() ? fwd.out.sizes() : at::IntArrayRef{}, ", q ", q.sizes(), ")");
  const bool causal = params.mask == AttentionMask::kCausal;
  AttentionGrads g;
  if (seqs != nullptr) {
    TORCH_CHECK(fwd.impl == AttentionImpl::kFlash, "attention backward (packed): the forward ran ",
                AttentionImplName(fwd.impl), ", expected flash");
    std::tie(g.dq, g.dk, g.dv) = at::_flash_attention_backward(
        dout, q, k, v, fwd.out, fwd.lse, seqs->cu_seqlens_q, seqs->cu_seqlens_k, seqs->max_seqlen_q,
        seqs->max_seqlen_k, /*dropout_p=*/0.0, causal, fwd.rng_state, fwd.rng_offset, params.scale);
    return g;
  }
  const int64_t sq = q.size(2), sk = k.size(2);
  switch (fwd.impl) {
    case AttentionImpl::kCudnn:
      std::tie(g.dq, g.dk, g.dv) = at::_scaled_dot_product_cudnn_attention_backward(
          InLayoutOf(dout, fwd.out), q, k, v, fwd.out, fwd.lse, fwd.rng_state, fwd.rng_offset,
          /*attn_bias=*/at::Tensor(), /*cum_seq_q=*/at::Tensor(), /*cum_seq_k=*/at::Tensor(), sq, sk,
          /*dropout_p=*/0.0, causal, params.scale);
      return g;
    case AttentionImpl::kFlash:
      std::tie(g.dq, g.dk, g.dv) = at::_scaled_dot_product_flash_attention_backward(
          dout, q, k, v, fwd.out, fwd.lse, /*cum_seq_q=*/at::Tensor(), /*cum_seq_k=*/at::Tensor(), sq, sk,
          /*dropout_p=*/0.0, causal, fwd.rng_state, fwd.rng_offset, params.scale);
      return g;
    default:
      TORCH_CHECK(false, "attention backward: the forward ran ", AttentionImplName(fwd.impl),
                  ", which has no CUDA backward (pass the forward result of CUDA tensors)");
  }
}

const bool kRegistered = [] {
  RegisterCudaAttentionImpl(&CudaAttentionForward, &CudaAttentionBackward);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
