// Fused attention (flash-style: the [sq, sk] scores never reach memory), forward and backward, through ATen's
// cuDNN and FlashAttention-2 entry points, with a float64 reference that is also the semantic definition.
//
// Semantics (params in attention_params.h), per batch b and query head h, with g = hq / hkv and kv head h / g:
//   S = scale · q[b, h] · k[b, h/g]^T                      [sq, sk]
//   S_ij = -inf where params.mask excludes key j for query i (Note [Bottom-right causal])
//   lse_i = log(sum_j exp(S_ij)),  P = exp(S - lse),  out[b, h] = P · v[b, h/g]
//   A query that sees no key outputs zeros (lse = -inf in the reference, +-inf on CUDA) and gets no gradient.
//   Backward: dv, dk, dq of that function for a given dout; dk and dv sum over the g query heads of a group.
// Grouped-query attention (GQA/MQA) is native: k and v keep hkv heads (hq % hkv == 0), nothing is expanded.
//
// Dense form:  q [b, hq, sq, d], k and v [b, hkv, sk, d]   (the [b, np, s, hn] of CoreAttention; any strides with
//              stride(-1) == 1, e.g. the permuted [s, b, n, hn] views SelfAttention makes).
//              out [b, hq, sq, d] (strides are the kernel's), lse float32 [b, hq, sq] (reference: float64).
// Packed form (THD): n sequences laid end to end; q [total_q, hq, d], k and v [total_k, hkv, d], cu_seqlens_q/k
//              int32 [n + 1] on q's device (prefix sums starting at 0), max_seqlen_q/k the longest lengths.
//              Sequence i is q rows [cu_q[i], cu_q[i+1]) against k/v rows [cu_k[i], cu_k[i+1]); the mask applies
//              within each sequence. out [total_q, hq, d]; lse is the kernel's own layout (flash: [hq, total_q]),
//              opaque: only Backward reads it. This is padded or packed batches without padding compute.
// Shapes: b, hq, hkv, sq, sk >= 1; d % 8 == 0 and d <= 256 (attention_params.h says why); hq % hkv == 0.
// Dtypes: CUDA: bfloat16 or float16 (all of q, k, v, dout alike), fp32 accumulation inside the kernels. The
//   reference also takes float32 and float64 (finite differences) and computes in float64 whatever the input.
// Which kernel (CUDA): ChooseAttentionImpl below; the result says which ran. Dropout is not supported (callers
//   with attention dropout > 0 use their unfused path).
// Aliasing: outputs are fresh tensors; inputs are never written.
// Devices and streams: CUDA tensors run the ATen ops on the current stream when
//   //megatron/core/fusions/attention:attention_cuda is linked; CPU tensors run the reference; a CUDA tensor in a
//   binary without it fails with a message saying so.
// Autograd: these functions are not differentiable; attention_autograd.h wraps them in a torch::autograd::Function.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "megatron/core/fusions/attention/attention_params.h"

namespace megatron::fusions {

// The packed (THD) form's sequence boundaries.
struct PackedSequences {
  at::Tensor cu_seqlens_q;  // int32 [n + 1], on q's device
  at::Tensor cu_seqlens_k;  // int32 [n + 1], on q's device
  int64_t max_seqlen_q = 0;
  int64_t max_seqlen_k = 0;
};

struct AttentionForwardResult {
  at::Tensor out;
  at::Tensor lse;
  AttentionImpl impl = AttentionImpl::kReference;  // what ran
  // The random-number state the ATen op returned (cuDNN: philox seed and offset; flash: rng_state and its
  // unused companion). Opaque; Backward hands them back to the op's backward. Undefined for the reference.
  at::Tensor rng_state;
  at::Tensor rng_offset;
};

struct AttentionGrads {
  at::Tensor dq;  // q's shape and dtype
  at::Tensor dk;  // k's shape and dtype
  at::Tensor dv;  // v's shape and dtype
};

AttentionForwardResult AttentionForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const AttentionParams& params);
// fwd: the result of AttentionForward on the same q, k, v and params (its impl runs the backward).
AttentionGrads AttentionBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const AttentionForwardResult& fwd, const AttentionParams& params);

AttentionForwardResult PackedAttentionForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const PackedSequences& seqs, const AttentionParams& params);
AttentionGrads PackedAttentionBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const AttentionForwardResult& fwd,
                                       const PackedSequences& seqs, const AttentionParams& params);

// ---- The kernel choice on CUDA (sm_90), a pure function of the shapes ----

struct AttentionShape {
  bool packed = false;
  int64_t hq = 0, hkv = 0, sq = 0, sk = 0, d = 0;  // packed: sq, sk = max_seqlen_q, max_seqlen_k
};

// params.impl kAuto: packed -> kFlash (varlen FlashAttention-2; cuDNN's ragged path in ATen is still behind an
// experimental switch); dense -> kCudnn when d <= 128, sk > 1 (cuDNN SDPA has no sk == 1 kernel) and the mask is not
// causal with sq != sk (ATen's cuDNN causal mask is top-left aligned, see Note [Bottom-right causal]); else kFlash.
// kCudnn on a case cuDNN cannot run, or on the packed form, is an error saying why; kFlash always works;
// kReference is refused (it is what CPU tensors run, not a CUDA choice).
AttentionImpl ChooseAttentionImpl(const AttentionShape& shape, const AttentionParams& params);

// ---- Building blocks (tests, the CUDA glue) ----

// float64 ATen on any device. Same contract as above; the backward recomputes everything from q, k, v and dout
// (fwd is only checked for being defined), so its gradients are exact for the given inputs.
AttentionForwardResult AttentionForwardReference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const AttentionParams& params);
AttentionGrads AttentionBackwardReference(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const AttentionParams& params);
// Each sequence through the dense reference (b = 1) and the results concatenated: the definition of the packed
// form. Reads cu_seqlens on the host.
AttentionForwardResult PackedAttentionForwardReference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const PackedSequences& seqs, const AttentionParams& params);
AttentionGrads PackedAttentionBackwardReference(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const PackedSequences& seqs,
                                                const AttentionParams& params);

// Input checks shared by every implementation (c10::Error naming shapes and dtypes, one message per problem).
// dout may be undefined (forward). allow_wide_dtypes: also float32/float64 (the reference).
void CheckAttentionInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                          const PackedSequences* seqs, bool allow_wide_dtypes);

// The CUDA implementation registers itself from a static initialiser in attention_cuda.cc. seqs is null for the
// dense form.
using AttentionForwardFn = AttentionForwardResult (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                      const PackedSequences*, const AttentionParams&);
using AttentionBackwardFn = AttentionGrads (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const AttentionForwardResult&,
                                               const PackedSequences*, const AttentionParams&);
void RegisterCudaAttentionImpl(AttentionForwardFn forward, AttentionBackwardFn backward);
bool HasCudaAttentionImpl();

const char* AttentionImplName(AttentionImpl impl);

}  // namespace megatron::fusions
