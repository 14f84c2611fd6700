// Bias + activation for the MLP, forward and backward: bias + GeLU (tanh or erf) and bias + SwiGLU.
//
// Semantics (activation_params.h), with z = x + bias (bias broadcast over the last dimension; no bias: z = x):
//   kGeluTanh / kGeluErf: y = gelu(z), same shape as x.
//   kSwiGLU: z = [gate; up] on the last dimension (2h), y = silu(gate) * up, shape [..., h].
// Backward from dy (y's shape) and the saved x (and bias): dx = dy * dy/dz (x's shape), dbias = sum over all
//   leading dimensions of dx (undefined without a bias).
//
// Shapes: x [..., c] contiguous (c even for SwiGLU), bias [c] or undefined. Zero rows allowed.
// Dtypes: x in float32, bfloat16 or float16, bias in x's dtype; arithmetic in float32 on CUDA (float64 in the
//   reference); y, dx, dbias in x's dtype. The reference also accepts float64.
// Aliasing: outputs are fresh tensors. Devices and streams: as the other fusions units (CUDA tensors run
//   activation_kernel.cu on the current stream when :activation_cuda is linked; CPU tensors the float64
//   reference). Not differentiable by autograd (the fused backend wraps it).
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/activation/activation_params.h"

namespace megatron::fusions {

struct ActivationBackwardResult {
  at::Tensor dx;     // x's shape and dtype
  at::Tensor dbias;  // [c], undefined without a bias
};

at::Tensor BiasActivationForward(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind);
ActivationBackwardResult BiasActivationBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                                ActivationKind kind);

// ---- Building blocks (tests, the CUDA glue) ----

at::Tensor BiasActivationForwardReference(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind);
ActivationBackwardResult BiasActivationBackwardReference(const at::Tensor& dy, const at::Tensor& x,
                                                         const at::Tensor& bias, ActivationKind kind);

void CheckActivationInputs(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind, bool allow_float64);
void CheckActivationBackwardInputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                   ActivationKind kind, bool allow_float64);

using ActivationForwardFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, ActivationKind);
using ActivationBackwardFn = ActivationBackwardResult (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                          ActivationKind);
void RegisterCudaActivationImpl(ActivationForwardFn forward, ActivationBackwardFn backward);
bool HasCudaActivationImpl();

}  // namespace megatron::fusions
