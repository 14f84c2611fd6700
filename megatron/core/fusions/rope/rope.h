// Rotary position embedding applied to q or k, forward and backward (Megatron's apply_rotary_pos_emb, bshd).
//
// Semantics: t [s, b, n, d], freqs [s, 1, 1, r] (angles, r even, r <= d: the rotary fraction is r / d). The first r
//   features rotate, the other d - r pass through unchanged:
//     y[..., :r] = t[..., :r] * cos(freqs) + rotate(t[..., :r]) * sin(freqs),   y[..., r:] = t[..., r:]
//   rotate (kHalves): [x1, x2] -> [-x2, x1] on the two halves; (kInterleaved): (x0, x1) -> (-x1, x0) on each pair.
//   With Megatron's freqs (the same angle in both elements of a pair) this rotates each pair by its angle.
//   Backward (the transpose, for any freqs): dt[..., :r] = dy * cos(freqs) + rotate^T(dy * sin(freqs)),
//   rotate^T([a1, a2]) = [a2, -a1] (pairwise likewise); dt[..., r:] = dy[..., r:].
// Shapes: t and dy [s, b, n, d] with a contiguous last dimension and any strides on the first three (q and k come
//   out of the fused QKV projection as strided views); freqs float32 [s, 1, 1, r], contiguous. Outputs are
//   contiguous [s, b, n, d].
// Dtypes: t in float32, bfloat16 or float16 (arithmetic in float32 on CUDA, float64 in the reference); outputs in
//   t's dtype. The reference also accepts float64 t and freqs.
// Devices, streams, registration and autograd: as the other fusions units (CUDA tensors run rope_kernel.cu on the
//   current stream when :rope_cuda is linked; CPU tensors the float64 reference; not differentiable by autograd).
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/rope/rope_params.h"

namespace megatron::fusions {

at::Tensor RopeForward(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params);
at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& freqs, const RopeParams& params);

// ---- Building blocks (tests, the CUDA glue) ----

at::Tensor RopeForwardReference(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params);
at::Tensor RopeBackwardReference(const at::Tensor& dy, const at::Tensor& freqs, const RopeParams& params);

// c10::Error naming shapes and dtypes. allow_float64: the reference accepts float64.
void CheckRopeInputs(const at::Tensor& t, const at::Tensor& freqs, bool allow_float64);

using RopeFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const RopeParams&);
void RegisterCudaRopeImpl(RopeFn forward, RopeFn backward);
bool HasCudaRopeImpl();

}  // namespace megatron::fusions
