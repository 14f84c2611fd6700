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

}  // namespace megatron::fusions
