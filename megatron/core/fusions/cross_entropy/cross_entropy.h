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
// Vocabulary-parallel (tensor parallelism, Megatron's vocab-parallel cross entropy): rank r holds the logits
//   columns [start_r, start_r + V_local) of the full [n, V] (VocabShard, cross_entropy_params.h); targets,
//   ignore_index and valid_vocab (K) refer to the full vocabulary. CrossEntropyShardPartials gives per row the
//   shard's lse_r, the target's logit where the target falls in the shard (else 0) and the shard's sum of valid
//   logits; over the shards lse = M + log sum_r exp(lse_r - M) with M = max_r lse_r (an all-reduce MAX, then one
//   SUM of [exp(lse_r - M), x_t, sum_x]); CrossEntropyLossFromStats forms the loss above with the full K; and
//   CrossEntropyShardBackward writes the shard's columns of the gradient above from the global lse. Label
//   smoothing's mean runs over the FULL valid vocabulary and padding is excluded wherever it lies, so the loss and
//   the assembled gradient do not depend on the number of shards (tests/tensor_parallel checks 1, 2 and 4 to 1e-10
//   in float64). tensor_parallel::FusedVocabParallelCrossEntropy composes the three with the collectives.
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

// ---- Vocabulary-parallel pieces (see Vocabulary-parallel above) ----

// [3, n] float32 (float64 for float64 logits on the reference), rows: 0 the shard's log-sum-exp over its valid
// columns (-inf when it holds none), 1 the target's logit if start <= target < start + V_local and target < K
// (else 0), 2 the sum of the shard's valid logits. logits_shard [n, V_local] as CrossEntropyForward's logits;
// target [n] full-vocabulary ids (checked on the CPU path only, like CrossEntropyForward).
at::Tensor CrossEntropyShardPartials(const at::Tensor& logits_shard, const at::Tensor& target,
                                     const VocabShard& shard, const CrossEntropyParams& params);

// The loss [n] from the statistics of the whole vocabulary (each [n], float32 or float64, on target's device):
// (1 - eps) * (lse - target_logit) + eps * (lse - sum_logits / K), K = EffectiveValidVocab(params, full_vocab);
// 0 on ignored rows, NaN where the target is outside [0, K) (not checked: no device synchronisation). ATen ops.
at::Tensor CrossEntropyLossFromStats(const at::Tensor& lse, const at::Tensor& target_logit,
                                     const at::Tensor& sum_logits, const at::Tensor& target, int64_t full_vocab,
                                     const CrossEntropyParams& params);

// The shard's gradient [n, V_local] in its logits' dtype: columns [start, start + V_local) of CrossEntropyBackward
// of the full logits, from the full vocabulary's lse (as CrossEntropyLossFromStats used). grad_loss and lse as
// CrossEntropyBackward's; buffer likewise (kOverwriteLogits writes into logits_shard).
at::Tensor CrossEntropyShardBackward(const at::Tensor& grad_loss, const at::Tensor& logits_shard,
                                     const at::Tensor& target, const at::Tensor& lse, const VocabShard& shard,
                                     const CrossEntropyParams& params, GradLogitsBuffer buffer);

// ---- Building blocks (tests, the CUDA glue) ----

// The reference: float64 ATen, same contract as above (targets checked). Runs on the tensors' device.
CrossEntropyForwardResult CrossEntropyForwardReference(const at::Tensor& logits, const at::Tensor& target,
                                                       const CrossEntropyParams& params);
at::Tensor CrossEntropyBackwardReference(const at::Tensor& grad_loss, const at::Tensor& logits,
                                         const at::Tensor& target, const at::Tensor& lse,
                                         const CrossEntropyParams& params, GradLogitsBuffer buffer);

// The references of the shard pieces (float64 ATen; targets checked).
at::Tensor CrossEntropyShardPartialsReference(const at::Tensor& logits_shard, const at::Tensor& target,
                                              const VocabShard& shard, const CrossEntropyParams& params);
at::Tensor CrossEntropyShardBackwardReference(const at::Tensor& grad_loss, const at::Tensor& logits_shard,
                                              const at::Tensor& target, const at::Tensor& lse,
                                              const VocabShard& shard, const CrossEntropyParams& params,
                                              GradLogitsBuffer buffer);

// Shape, dtype, device and params checks shared by every implementation (target values are not read); throw
// c10::Error naming the offending shape or dtype. allow_float64: the reference accepts float64, the kernels not.
// The shard forms also check that the shard lies inside [0, full_vocab) and valid_vocab <= full_vocab; the
// others are them with WholeVocab(V).
void CheckCrossEntropyForwardInputs(const at::Tensor& logits, const at::Tensor& target,
                                    const CrossEntropyParams& params, bool allow_float64);
void CheckCrossEntropyBackwardInputs(const at::Tensor& grad_loss, const at::Tensor& logits,
                                     const at::Tensor& target, const at::Tensor& lse,
                                     const CrossEntropyParams& params, bool allow_float64);
void CheckCrossEntropyShardInputs(const at::Tensor& logits_shard, const at::Tensor& target, const VocabShard& shard,
                                  const CrossEntropyParams& params, bool allow_float64);
void CheckCrossEntropyShardBackwardInputs(const at::Tensor& grad_loss, const at::Tensor& logits_shard,
                                          const at::Tensor& target, const at::Tensor& lse, const VocabShard& shard,
                                          const CrossEntropyParams& params, bool allow_float64);

// The CUDA implementation registers itself here from a static initialiser in cross_entropy_cuda.cc, which keeps
// this library (and every CPU binary) free of CUDA. Registering twice replaces the previous functions.
using CrossEntropyForwardFn = CrossEntropyForwardResult (*)(const at::Tensor&, const at::Tensor&,
                                                            const CrossEntropyParams&);
using CrossEntropyBackwardFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, const CrossEntropyParams&, GradLogitsBuffer);
void RegisterCudaCrossEntropyImpl(CrossEntropyForwardFn forward, CrossEntropyBackwardFn backward);
bool HasCudaCrossEntropyImpl();
// The shard pieces' kernels, registered by the same static initialiser.
using CrossEntropyShardPartialsFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const VocabShard&,
                                                   const CrossEntropyParams&);
using CrossEntropyShardBackwardFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const VocabShard&, const CrossEntropyParams&,
                                                   GradLogitsBuffer);
void RegisterCudaCrossEntropyShardImpl(CrossEntropyShardPartialsFn partials, CrossEntropyShardBackwardFn backward);

}  // namespace megatron::fusions
