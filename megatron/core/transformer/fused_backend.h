// The "fused" backend: the same layer spec as the local backend, with roles implemented by our fused kernels
// (megatron/core/fusions) where one exists. Parameter names are the local backend's, so a checkpoint moves
// between backends unchanged (tested).
//
// Today: LayerNorm / RMSNorm (fusions/norm), the pre-norm layer's residual adds fused with the norm that follows
// them (fusions/norm's residual add + norm: Norm::ResidualAddForward), RoPE on q and k (fusions/rope), the MLP
// activation (GeLU erf/tanh and SwiGLU: fusions/activation) and
// the loss's cross entropy (fusions/cross_entropy, computed from the bf16 logits without an fp32 copy; with tensor
// parallelism its vocab-parallel form, tensor_parallel::FusedVocabParallelCrossEntropy) run our
// fused ops: CUDA kernels on GPU tensors, the float64 reference on CPU
// tensors (exact but slow: use LOCAL on CPU). Core attention (SDPA: flash/cuDNN on GPU)
// and ReLU / quick GeLU are the local ones.
//
// Linking this library registers the provider for Backend::kFused (GetBackend finds it); binaries that can run
// a FUSED recipe depend on it.
#pragma once

#include <memory>

#include "megatron/core/transformer/layers.h"

namespace megatron::transformer {

std::shared_ptr<const BackendProvider> FusedBackend();

}  // namespace megatron::transformer
