// The parameters of the scaled (masked) softmax, shared by the CUDA kernels (softmax_kernel.cu), the reference
// (softmax_reference.cc) and the contract (softmax.h), so the mask convention and the fill value cannot drift.
// Plain C++: compiled by nvcc and the host compiler, no libtorch.
#pragma once

namespace megatron::fusions {

// The three kernels of Megatron's legacy FusedScaleMaskSoftmax (research notes §5.5).
enum class SoftmaxMask {
  // ScaledUpperTriangMaskedSoftmax: key j > query i is excluded (probability exactly 0); needs sq == sk.
  kCausal,
  // ScaledMaskedSoftmax: a boolean mask, true = masked, broadcast [b or 1, 1, sq, sk]; a masked score is replaced
  // by kMaskedScore (not -inf), so a row masked everywhere comes out uniform, exactly as the unfused path's
  // masked_fill(mask, -10000) + softmax does.
  kExplicit,
  // ScaledSoftmax: no mask.
  kNone,
};

// Megatron's attention_mask_func fill value (legacy/model/utils.py), also what the fused kernels write.
constexpr float kMaskedScore = -10000.f;

struct SoftmaxParams {
  SoftmaxMask mask = SoftmaxMask::kNone;
  // Multiplies the scores before masking and softmax (Megatron: 1 / (sqrt(hn) * layer coefficient) when
  // apply_query_key_layer_scaling is on, else 1).
  float scale = 1.f;
};

}  // namespace megatron::fusions
