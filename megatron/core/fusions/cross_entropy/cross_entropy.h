// Fused softmax cross-entropy over the vocabulary, forward and backward: the contract.
//
// Semantics (params in cross_entropy_params.h), for row i of logits x [n, V], target t_i, K = valid classes
// (params.valid_vocab, or V when 0), eps = params.label_smoothing, columns j < K only (columns >= K are padding,
// treated as -inf logits):
//   lse_i  = log sum_{j<K} exp(x_ij)
//   loss_i = (1 - eps) * (lse_i - x_{i,t_i}) + eps * (lse_i - sum_{j<K} x_ij / K)
//          = (1 - eps) * nll_i + eps * mean_{j<K}(-log p_ij)            (PyTorch's cross_entropy, reduction none)
//   loss_i = 0 where t_i == params.ignore_index.
// Backward, p_ij = exp(x_ij - lse_i):
//   dx_ij = grad_loss_i * (p_ij - (1 - eps) * [j == t_i] - eps / K)    for j < K
//   dx_ij = 0 for j >= K (padding) and for every j of an ignored row.
//
// Shapes: logits [n, V] contiguous (n >= 0, V >= 1); target [n] int64; loss, lse, grad_loss [n] float32.
// Targets: in [0, K) or equal to ignore_index. The CPU path checks this and throws. The CUDA path does not
//   synchronise to check; a row with an out-of-range target gets loss NaN (and its gradient row is NaN), so the
//   error surfaces in the loss instead of reading out of bounds.
// Dtypes: logits in float32, bfloat16 or float16. lse and loss are float32; every sum accumulates in float32 on
//   CUDA (float64 in the reference), and the CUDA path never materialises a float32 copy of the logits.
//   grad_logits comes out in logits' dtype. The reference (CPU) also accepts float64 logits and then returns
//   float64 loss, lse and gradient (the finite-difference tests use that); grad_loss and lse must then be float64.
// Aliasing: CrossEntropyForward never writes its inputs. CrossEntropyBackward with
//   GradLogitsBuffer::kAllocate returns a fresh tensor; with GradLogitsBuffer::kOverwriteLogits it writes the
//   gradient into the logits' storage and returns a tensor aliasing `logits` (same data pointer): no second
//   [n, V] allocation, which is the memory saving of Megatron's and Liger's fused cross-entropy (for V = 50304
//   and 16K tokens in bf16, 1.6 GB). The logits are destroyed: nothing else may read them afterwards (autograd
//   users must not have saved them for another backward), and they must not be a view that overlaps other live
//   data. Each element is read once and then written by the same thread, so in place is race-free.
// Devices and streams: all tensors on one device. CUDA tensors run the kernels of cross_entropy_kernel.cu on the
//   current CUDA stream of that device (asynchronous, like any ATen op) when
//   //megatron/core/fusions/cross_entropy:cross_entropy_cuda is linked into the binary; CPU tensors run the
//   float64 reference (cross_entropy_reference.cc). A CUDA tensor in a binary without it fails with a message.
// Not differentiable by autograd: callers wire CrossEntropyForward/Backward into their own autograd function.
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/cross_entropy/cross_entropy_params.h"

namespace megatron::fusions {

struct CrossEntropyForwardResult {
  at::Tensor loss;  // [n] float32 (float64 for float64 logits on the reference)
  at::Tensor lse;   // [n] float32: log-sum-exp over the valid columns, saved for the backward
};

// Where CrossEntropyBackward puts the gradient (see Aliasing above).
enum class GradLogitsBuffer {
  kAllocate,         // a fresh [n, V] tensor; logits untouched
  kOverwriteLogits,  // the logits' own storage; the returned tensor aliases logits
};

CrossEntropyForwardResult CrossEntropyForward(const at::Tensor& logits, const at::Tensor& target,
                                              const CrossEntropyParams& params);

// lse as returned by CrossEntropyForward. Returns grad_logits [n, V] in logits' dtype.
at::Tensor CrossEntropyBackward(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                const at::Tensor& lse, const CrossEntropyParams& params, GradLogitsBuffer buffer);

// ---- Building blocks (tests, the CUDA glue) ----

// The reference: float64 ATen, same contract as above (targets checked). Runs on the tensors' device.
CrossEntropyForwardResult CrossEntropyForwardReference(const at::Tensor& logits, const at::Tensor& target,
                                                       const CrossEntropyParams& params);
at::Tensor CrossEntropyBackwardReference(const at::Tensor& grad_loss, const at::Tensor& logits,
                                         const at::Tensor& target, const at::Tensor& lse,
                                         const CrossEntropyParams& params, GradLogitsBuffer buffer);

// Shape, dtype, device and params checks shared by every implementation (target values are not read); throw
// c10::Error naming the offending shape or dtype. allow_float64: the reference accepts float64, the kernels not.
void CheckCrossEntropyForwardInputs(const at::Tensor& logits, const at::Tensor& target,
                                    const CrossEntropyParams& params, bool allow_float64);
void CheckCrossEntropyBackwardInputs(const at::Tensor& grad_loss, const at::Tensor& logits,
                                     const at::Tensor& target, const at::Tensor& lse,
                                     const CrossEntropyParams& params, bool allow_float64);

// The CUDA implementation registers itself here from a static initialiser in cross_entropy_cuda.cc, which keeps
// this library (and every CPU binary) free of CUDA. Registering twice replaces the previous functions.
using CrossEntropyForwardFn = CrossEntropyForwardResult (*)(const at::Tensor&, const at::Tensor&,
                                                            const CrossEntropyParams&);
using CrossEntropyBackwardFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, const CrossEntropyParams&, GradLogitsBuffer);
void RegisterCudaCrossEntropyImpl(CrossEntropyForwardFn forward, CrossEntropyBackwardFn backward);
bool HasCudaCrossEntropyImpl();

}  // namespace megatron::fusions
