// The parameters of a cross-entropy loss, shared by the CUDA kernels (cross_entropy_kernel.cu), the reference
// (cross_entropy_reference.cc) and the ATen-facing contract (cross_entropy.h), so the smoothing formula and the
// padding rule cannot drift between them. Plain C++: nvcc compiles this header too; it must not include libtorch.
#pragma once

#include <cstdint>

namespace megatron::fusions {

struct CrossEntropyParams {
  // Rows whose target equals this get loss 0 and gradient 0 (PyTorch's ignore_index; Megatron masks padding
  // tokens this way).
  int64_t ignore_index = -100;
  // epsilon of PyTorch's cross_entropy: loss = (1 - eps) * nll + eps * mean over the valid classes of -log p.
  // In [0, 1].
  double label_smoothing = 0.0;
  // Columns [valid_vocab, V) of the logits are vocabulary padding (Megatron pads the vocabulary to a multiple of
  // 128 * tensor-parallel size): they are excluded from the softmax as if they were -inf, get gradient 0, and do
  // not count as classes for label smoothing. 0 means all V columns are valid. Otherwise 1 <= valid_vocab <= V.
  int64_t valid_vocab = 0;
};

// The number of classes the softmax runs over: valid_vocab, or V when valid_vocab is 0.
inline int64_t EffectiveValidVocab(const CrossEntropyParams& params, int64_t vocab) {
  return params.valid_vocab == 0 ? vocab : params.valid_vocab;
}

// One tensor-parallel rank's slice of the vocabulary (Megatron's vocab-parallel logits): its logits [n, V_local]
// are the columns [start, start + V_local) of the full [n, full_vocab] logits. params.valid_vocab, the target
// and ignore_index refer to the FULL vocabulary, so label smoothing and the padding rule are those of the
// unsharded loss and results do not depend on the number of shards.
struct VocabShard {
  int64_t start = 0;       // the shard's first column in the full vocabulary
  int64_t full_vocab = 0;  // V of the full (padded) vocabulary, >= start + V_local
};

// The shard covering a whole [n, vocab] tensor (the single-process loss).
inline VocabShard WholeVocab(int64_t vocab) { return VocabShard{0, vocab}; }

// How many of the shard's V_local columns are valid classes (the rest is vocabulary padding): K - start,
// clamped to [0, V_local], with K = EffectiveValidVocab(params, shard.full_vocab).
inline int64_t ShardValidColumns(const CrossEntropyParams& params, const VocabShard& shard, int64_t local_vocab) {
  const int64_t k = EffectiveValidVocab(params, shard.full_vocab) - shard.start;
  return k < 0 ? 0 : (k > local_vocab ? local_vocab : k);
}

}  // namespace megatron::fusions
