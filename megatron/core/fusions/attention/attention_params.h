// The parameters of fused attention, shared by the contract (attention.h), the float64 reference
// (attention_reference.cc), the CUDA glue (attention_cuda.cc) and the autograd wrapper, so the mask convention and
// the choice of kernel cannot drift between them. Plain C++, no libtorch.
#pragma once

namespace megatron::fusions {

// Which keys a query sees.
enum class AttentionMask {
  kNone,
  // Note [Bottom-right causal]: queries are the LAST sq of sk positions (decoding with a KV cache, Megatron's and
  // FlashAttention-2's convention): query i sees key j iff j <= i + (sk - sq). For sq == sk this is the usual lower
  // triangle. With sq > sk the first sq - sk queries see no key at all: their output (and gradient) is zero.
  // PyTorch's public scaled_dot_product_attention(is_causal=true) is top-left aligned instead; the two agree only
  // for sq == sk, which is why the cuDNN path is taken for causal only when sq == sk (see ChooseAttentionImpl).
  kCausal,
};

// Which ATen entry point runs a CUDA call. kAuto is the rule of ChooseAttentionImpl (cuDNN first where it
// supports the case on sm_90, else flash); kCudnn / kFlash force one (an unsupported case is an error, not a
// silent switch). kReference is what a CPU call reports having run.
enum class AttentionImpl {
  kAuto,
  kCudnn,      // at::_scaled_dot_product_cudnn_attention (+ _backward): dense form only
  kFlash,      // at::_scaled_dot_product_flash_attention (dense) / at::_flash_attention_forward (packed, varlen)
  kReference,  // float64 ATen ops (attention_reference.cc)
};

// Head dimension limits, common to every implementation so that a CPU run refuses what a GPU run would:
// a multiple of 8 (16-byte rows for the tensor-core loads of both kernels) and at most 256 (flash's largest
// head). cuDNN is chosen only up to 128, where its sm_90 backward exists on every cuDNN 9 release.
constexpr long kAttentionHeadDimMultiple = 8;
constexpr long kAttentionMaxHeadDim = 256;
constexpr long kCudnnAttentionMaxHeadDim = 128;

struct AttentionParams {
  // Multiplies q·k before the softmax; Megatron: 1 / sqrt(hn) (TransformerConfig::attention_scale()).
  double scale = 1.0;
  AttentionMask mask = AttentionMask::kNone;
  AttentionImpl impl = AttentionImpl::kAuto;
};

}  // namespace megatron::fusions
