// Fused LayerNorm / RMSNorm over the last dimension, forward and backward: the contract.
//
// Semantics (params in norm_params.h), per row r of x viewed as [rows, hidden] (rows = numel / hidden):
//   LayerNorm: mean_r = sum_i x_ri / hidden, rstd_r = 1 / sqrt(sum_i (x_ri - mean_r)^2 / hidden + eps),
//              y_ri = (x_ri - mean_r) * rstd_r * g_i + beta_i
//   RMSNorm:   rstd_r = 1 / sqrt(sum_i x_ri^2 / hidden + eps),  y_ri = x_ri * rstd_r * g_i
//   g_i = gamma_i, or 1 + gamma_i when params.zero_centered_gamma.
// Backward, with xhat = (x - mean) * rstd (LayerNorm) or x * rstd (RMSNorm) and dxhat = dy * g:
//   LayerNorm: dx = rstd * (dxhat - mean_i(dxhat) - xhat * mean_i(dxhat * xhat))
//   RMSNorm:   dx = rstd * (dxhat - xhat * mean_i(dxhat * xhat))
//   dgamma = sum_rows(dy * xhat), dbeta = sum_rows(dy) (LayerNorm only).
// Residual add + norm (ResidualAddNormForward; Megatron's fused_add_rms_norm, TE's residual + norm): the
//   pre-norm transformer's "h = residual + branch; y = norm(h)" in one pass. h = x + residual rounded to x's dtype
//   (exactly the unfused add's value), y = norm(h) as above, and both are returned: h is the next residual.
//   Backward (ResidualAddNormBackward): h feeds the norm and its other users (the next residual add), so
//   dh_total = NormBackward(dy, h).dx + dh, with dh the gradient from those other users (undefined means zero),
//   and dx = dresidual = dh_total (one tensor: the gradient of a sum is the same for both addends).
//
// Shapes: x and dy are [..., hidden] (any number of leading dimensions, at least one dimension), contiguous.
//   gamma and beta are [hidden], contiguous. y and dx have x's shape; mean and rstd have x's shape without the
//   last dimension. hidden >= 1; rows may be 0.
// Dtypes: x and dy in float32, bfloat16 or float16 (dy in x's dtype); gamma (and beta, same dtype as gamma) in
//   float32 or x's dtype. Statistics (mean, rstd) are float32, and every sum accumulates in float32 on CUDA
//   (float64 in the reference). y and dx come out in x's dtype; dgamma and dbeta in gamma's dtype.
//   The reference (CPU) also accepts float64 x/dy/gamma/beta and then returns float64 statistics: that is what the
//   finite-difference tests use. The CUDA path rejects float64.
//   residual has x's shape, dtype and device and is contiguous; h comes out in x's dtype; dh, when defined, has
//   h's shape and dtype.
// Aliasing: every output is a fresh tensor; inputs are never written.
// Devices and streams: all tensors on one device. CUDA tensors run the kernels of norm_kernel.cu on the current
//   CUDA stream of that device (asynchronous, like any ATen op) when //megatron/core/fusions/norm:norm_cuda is
//   linked into the binary; CPU tensors run the float64 reference (norm_reference.cc). A CUDA tensor in a binary
//   without norm_cuda fails with a message saying so.
// Not differentiable by autograd: callers wire NormForward/NormBackward into their own autograd function.
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/norm/norm_params.h"

namespace megatron::fusions {

struct NormForwardResult {
  at::Tensor y;     // x's shape and dtype
  at::Tensor mean;  // x.shape[:-1], float32; undefined for RMSNorm
  at::Tensor rstd;  // x.shape[:-1], float32
  at::Tensor h;     // x + residual, x's shape and dtype: ResidualAddNormForward only (undefined from NormForward)
};

struct NormBackwardResult {
  at::Tensor dx;      // x's shape and dtype
  at::Tensor dgamma;  // [hidden], gamma's dtype
  at::Tensor dbeta;   // [hidden], gamma's dtype; undefined for RMSNorm
};

// beta: LayerNorm only and optional (undefined means no shift); must be undefined for RMSNorm.
NormForwardResult NormForward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                              const NormParams& params);

// mean and rstd as returned by NormForward (mean undefined for RMSNorm).
NormBackwardResult NormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params);

// y = norm(x + residual) and h = x + residual (see Residual add + norm above); mean and rstd are h's.
NormForwardResult ResidualAddNormForward(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& gamma,
                                         const at::Tensor& beta, const NormParams& params);

// The backward of ResidualAddNormForward from its saved h and statistics: dx (= dresidual) = NormBackward(dy, h).dx
// + dh, rounded once; dh may be undefined (h has no other user). dgamma and dbeta as NormBackward's.
NormBackwardResult ResidualAddNormBackward(const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& h,
                                           const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
                                           const NormParams& params);

// ---- Building blocks (tests, the CUDA glue) ----

// The reference: float64 ATen on any device, whatever was linked. Same contract as above.
NormForwardResult NormForwardReference(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                       const NormParams& params);
NormBackwardResult NormBackwardReference(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                         const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params);
// The unfused residual add (in float64, rounded once to x's dtype) followed by NormForwardReference, and the
// float64 backward with dh added before the one rounding of dx.
NormForwardResult ResidualAddNormForwardReference(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& gamma, const at::Tensor& beta,
                                                  const NormParams& params);
NormBackwardResult ResidualAddNormBackwardReference(const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& h,
                                                    const at::Tensor& gamma, const at::Tensor& mean,
                                                    const at::Tensor& rstd, const NormParams& params);

// Input checks shared by every implementation; throw c10::Error naming the offending shape or dtype.
// allow_float64: the reference accepts float64, the kernels do not.
void CheckNormForwardInputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                            const NormParams& params, bool allow_float64);
void CheckNormBackwardInputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                             const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params,
                             bool allow_float64);
// `other` (residual, or dh) must match x: shape, dtype, device, contiguous. `what` names it in the message.
void CheckNormResidualInput(const at::Tensor& other, const at::Tensor& x, const char* what);

// The CUDA implementation registers itself here from a static initialiser in norm_cuda.cc, which keeps this
// library (and every CPU binary) free of CUDA. Registering twice replaces the previous functions. The registered
// functions are the residual forms: forward (x, residual, gamma, beta, params) and backward (dy, dh, x, gamma,
// mean, rstd, params), with residual / dh undefined for the plain norm.
using NormForwardFn = NormForwardResult (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                            const at::Tensor&, const NormParams&);
using NormBackwardFn = NormBackwardResult (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                              const NormParams&);
void RegisterCudaNormImpl(NormForwardFn forward, NormBackwardFn backward);
bool HasCudaNormImpl();

}  // namespace megatron::fusions
