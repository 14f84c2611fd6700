// The fused MLP activations, shared by the CUDA kernels (activation_kernel.cu), the reference
// (activation_reference.cc) and the contract (activation.h). Plain C++: compiled by nvcc and the host compiler.
#pragma once

namespace megatron::fusions {

enum class ActivationKind {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): Megatron's bias_gelu / fused_bias_gelu, GPT-2's "gelu_new".
  kGeluTanh,
  // 0.5 x (1 + erf(x / sqrt(2))): torch.nn.functional.gelu's default.
  kGeluErf,
  // x = [gate; up] on the last dimension (2h), y = silu(gate) * up ([..., h]): Megatron's bias_swiglu.
  kSwiGLU,
};

// Megatron's constants (legacy fused_bias_gelu.py): sqrt(2 / pi), the cubic coefficient, and
// sqrt(2 / pi) * 3 * 0.044715 for the derivative of the tanh argument.
constexpr float kGeluTanhSqrt2OverPi = 0.79788456f;
constexpr float kGeluTanhCubic = 0.044715f;
constexpr float kGeluTanhDerivCubic = 0.1070322243f;

}  // namespace megatron::fusions
