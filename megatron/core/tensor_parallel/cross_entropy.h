// Cross entropy over vocab-parallel logits (Megatron's megatron/core/tensor_parallel/cross_entropy.py): each
// tensor-parallel rank holds logits for its slice [r·V/tp, (r+1)·V/tp) of the (padded) vocabulary, and the
// per-token loss is computed without ever gathering the full [.., V] logits.
//
//   loss = VocabParallelCrossEntropy(logits_shard, target, tp_group);   // [s, b, V/tp], [s, b] -> [s, b]
//
// Forward, as Megatron's _VocabParallelCrossEntropy:
//   1. m = max of the local logits, all-reduced with MAX; logits -= m (so exp cannot overflow).
//   2. The target's logit is read on the rank whose slice holds it; other ranks contribute 0 (targets outside
//      the slice, including out-of-vocab ids such as -100, are masked to local index 0 and zeroed).
//   3. predicted logit and Σ exp are all-reduced with SUM (here in one all-reduce of both; Megatron issues two,
//      the sums are the same).
//   4. loss = log Σexp − predicted.  Backward: (softmax − onehot(target on its owning slice)) · grad_loss.
// A target outside [0, V) is in no slice: its "loss" is log Σexp(logit − max) (= logsumexp − max, finite and
// usually non-zero) and its gradient the plain softmax. Megatron does not mask such tokens here; the loss mask
// of the training step must.
//
// Padded vocabulary: Megatron pads V to a multiple of make_vocab_size_divisible_by·tp and does NOT mask the
// padded columns in the loss: their logits (from the padded rows of the output layer) take part in Σexp and
// get softmax gradient like any other id, and the model learns to push them down. So the loss over a padded
// vocab equals the unpadded cross entropy only if the caller masks the padded logits (fills them with −inf,
// which gives them exp = 0 and zero gradient). This function does what Megatron does and never masks.
//
// Label smoothing α (0 ≤ α < 1), Megatron's convention: mass α spread over the V−1 non-target ids, i.e.
// smoothing = α·V/(V−1) and loss = (1 − smoothing)·loss − smoothing·mean_over_V(log p). This equals
// at::cross_entropy_loss with label_smoothing = α·V/(V−1). Difference from Megatron: Megatron takes V and
// mean(log p) over the local slice only (so at TP>1 its smoothed loss depends on the slice); here V is the
// full vocabulary and Σ log p is all-reduced, so the result does not depend on TP.
//
// Precision: fp32 and fp64 logits are computed in their own dtype; fp16/bf16 are upcast to fp32 (Megatron
// always upcasts to fp32). The loss has that compute dtype; the gradient has the logits' dtype. The logits
// shard must have the same last-dim size on every rank; target is int64 shaped like logits without the last
// dim. `group` nullptr or of size 1: plain (single-process) cross entropy. The group must outlive backward.
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/distributed/process_group.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy_params.h"

namespace megatron::tensor_parallel {

at::Tensor VocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& target,
                                     distributed::Group* group, double label_smoothing = 0.0);

// The fused vocab-parallel cross entropy (the FUSED backend's; fusions/cross_entropy's kernels on CUDA tensors,
// its float64 reference on CPU tensors): the same sharding, without an fp32 copy of the logits.
//   1. One pass over the local logits (CrossEntropyShardPartials) gives per row the shard's log-sum-exp lse_r, the
//      target's logit where the target falls in this rank's slice (else 0) and the shard's sum of logits.
//   2. All-reduce MAX of lse_r (M), then one all-reduce SUM of [exp(lse_r − M), target logit, sum of logits]:
//      lse = M + log Σ — two small collectives on [n] and [3, n], never on [n, V].
//   3. loss from (lse, target logit, sum) with the full vocabulary's K (CrossEntropyLossFromStats).
//   Backward: CrossEntropyShardBackward recomputes the softmax from the saved global lse straight into a fresh
//   gradient in the logits' dtype; no collective (the loss is replicated, each rank owns its columns' gradient).
// Semantics are those of the single-process fused loss (fusions/cross_entropy/cross_entropy.h), not Megatron's:
// PyTorch's label smoothing with the mean over the FULL valid vocabulary; rows whose target is
// params.ignore_index get loss 0 and no gradient; columns >= params.valid_vocab (of the full, padded vocabulary;
// 0: none) are excluded as if -inf, wherever they lie; a target outside [0, K) is an error on CPU and NaN on CUDA.
// So the loss and the assembled gradient do not depend on TP: at TP = 1, 2 and 4 they equal CrossEntropyForward /
// Backward of the full logits (tests/tensor_parallel/cross_entropy_test.cc, to 1e-10 in float64).
// logits_shard [..., V/tp] contiguous or not (flattened to [n, V/tp]), the same width on every rank; float32,
// bfloat16 or float16 on CUDA, also float64 on CPU. target int64 shaped like logits without the last dim. The loss
// is float32 (float64 for float64 logits), target's shape. group nullptr or of size 1: the single-process loss.
at::Tensor FusedVocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& target,
                                          distributed::Group* group, const fusions::CrossEntropyParams& params = {});

}  // namespace megatron::tensor_parallel
