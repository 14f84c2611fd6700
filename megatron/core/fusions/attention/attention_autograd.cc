#include "megatron/core/fusions/attention/attention_autograd.h"

#include <torch/csrc/autograd/custom_function.h>

namespace megatron::fusions {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// apply() takes tensors and scalars, not structs: the params travel as three scalars.
AttentionParams MakeParams(double scale, int64_t mask, int64_t impl) {
  return AttentionParams{scale, static_cast<AttentionMask>(mask), static_cast<AttentionImpl>(impl)};
}

void SaveParams(AutogradContext* ctx, double scale, int64_t mask, int64_t impl, const AttentionForwardResult& r) {
  ctx->saved_data["scale"] = scale;
  ctx->saved_data["mask"] = mask;
  ctx->saved_data["impl"] = impl;
  ctx->saved_data["ran"] = static_cast<int64_t>(r.impl);
}

AttentionParams SavedParams(AutogradContext* ctx) {
  return MakeParams(ctx->saved_data["scale"].toDouble(), ctx->saved_data["mask"].toInt(),
                    ctx->saved_data["impl"].toInt());
}

// saved: q, k, v, out, lse, rng_state, rng_offset (+ cu_seqlens_q, cu_seqlens_k for the packed form).
AttentionForwardResult SavedForward(AutogradContext* ctx, const variable_list& s) {
  AttentionForwardResult r;
  r.out = s[3];
  r.lse = s[4];
  r.rng_state = s[5];
  r.rng_offset = s[6];
  r.impl = static_cast<AttentionImpl>(ctx->saved_data["ran"].toInt());
  return r;
}

struct DenseAttentionFunction : public torch::autograd::Function<DenseAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            double scale, int64_t mask, int64_t impl) {
    const AttentionForwardResult r = AttentionForward(q, k, v, MakeParams(scale, mask, impl));
    ctx->save_for_backward({q, k, v, r.out, r.lse, r.rng_state, r.rng_offset});
    SaveParams(ctx, scale, mask, impl, r);
    return r.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    const AttentionGrads g =
        AttentionBackward(grad_outputs[0], s[0], s[1], s[2], SavedForward(ctx, s), SavedParams(ctx));
    return {g.dq, g.dk, g.dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct PackedAttentionFunction : public torch::autograd::Function<PackedAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                            int64_t max_seqlen_k, double scale, int64_t mask, int64_t impl) {
    const PackedSequences seqs{cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k};
    const AttentionForwardResult r = PackedAttentionForward(q, k, v, seqs, MakeParams(scale, mask, impl));
    ctx->save_for_backward({q, k, v, r.out, r.lse, r.rng_state, r.rng_offset, cu_seqlens_q, cu_seqlens_k});
    ctx->saved_data["max_seqlen_q"] = max_seqlen_q;
    ctx->saved_data["max_seqlen_k"] = max_seqlen_k;
    SaveParams(ctx, scale, mask, impl, r);
    return r.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    const PackedSequences seqs{s[7], s[8], ctx->saved_data["max_seqlen_q"].toInt(),
                               ctx->saved_data["max_seqlen_k"].toInt()};
    const AttentionGrads g =
        PackedAttentionBackward(grad_outputs[0], s[0], s[1], s[2], SavedForward(ctx, s), seqs, SavedParams(ctx));
    return {g.dq,         g.dk,         g.dv,         at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor FusedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const AttentionParams& params) {
  return DenseAttentionFunction::apply(q, k, v, params.scale, static_cast<int64_t>(params.mask),
                                       static_cast<int64_t>(params.impl));
}

at::Tensor FusedPackedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const PackedSequences& seqs, const AttentionParams& params) {
  return PackedAttentionFunction::apply(q, k, v, seqs.cu_seqlens_q, seqs.cu_seqlens_k, seqs.max_seqlen_q,
                                        seqs.max_seqlen_k, params.scale, static_cast<int64_t>(params.mask),
                                        static_cast<int64_t>(params.impl));
}

}  // namespace megatron::fusions
