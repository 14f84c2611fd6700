// Parameters of the fused rotary position embedding, shared by the CUDA kernels (rope_kernel.cu), the reference
// (rope_reference.cc) and the contract (rope.h). Plain C++: compiled by nvcc and the host compiler.
#pragma once

namespace megatron::fusions {

// Which elements rotate together (Megatron's rotary_interleaved).
enum class RotaryLayout {
  // rotate_half: element j pairs with j + r/2 (HuggingFace Llama, Megatron's default).
  kHalves,
  // element 2j pairs with 2j + 1 (GPT-J / Megatron's rotary_interleaved=True).
  kInterleaved,
};

struct RopeParams {
  RotaryLayout layout = RotaryLayout::kHalves;
};

}  // namespace megatron::fusions
