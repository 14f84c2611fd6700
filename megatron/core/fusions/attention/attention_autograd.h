// Differentiable fused attention for training: torch::autograd::Function wrappers around AttentionForward /
// AttentionBackward (attention.h has the contract: shapes, GQA, the bottom-right causal mask, dtypes). The forward
// saves q, k, v, out, the log-sum-exp and the kernel's random-number state; the backward runs the backward of
// whichever kernel ran forward. Gradients flow to q, k and v (never to cu_seqlens). CPU tensors run the float64
// reference through the same wrapper (tests compare it with autograd of plain ATen ops).
// Kept apart from :attention because torch/csrc/autograd/custom_function.h is a heavy include (STYLE.md).
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/attention/attention.h"

namespace megatron::fusions {

// q [b, hq, sq, d], k/v [b, hkv, sk, d] -> out [b, hq, sq, d].
at::Tensor FusedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const AttentionParams& params);

// q [total_q, hq, d], k/v [total_k, hkv, d] -> out [total_q, hq, d].
at::Tensor FusedPackedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const PackedSequences& seqs, const AttentionParams& params);

}  // namespace megatron::fusions
