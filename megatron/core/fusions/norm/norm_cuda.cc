// The ATen glue of the CUDA norm kernels: checks inputs, allocates outputs (caching allocator, x's device), calls
// the launchers of norm_kernel.h on the current stream of x's device, TORCH_CHECKs their cudaError_t, and
// registers itself as the CUDA implementation of NormForward/NormBackward and their residual-add forms (norm.h)
// before main runs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "megatron/core/fusions/norm/norm.h"
#include "megatron/core/fusions/norm/norm_kernel.h"

namespace megatron::fusions {
namespace {

NormDtype ToNormDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return NormDtype::kFloat32;
    case at::kBFloat16:
      return NormDtype::kBFloat16;
    case at::kHalf:
      return NormDtype::kFloat16;
    default:
      TORCH_CHECK(false, "CUDA norm: unsupported dtype ", t, " (float32, bfloat16 or float16)");
  }
}

std::vector<int64_t> LeadingSizes(const at::Tensor& x) {
  return std::vector<int64_t>(x.sizes().begin(), x.sizes().end() - 1);
}

int NumSms(int device) {
  int sms = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  TORCH_CHECK(err == cudaSuccess, "CUDA norm: cudaDeviceGetAttribute: ", cudaGetErrorString(err));
  return sms;
}

// residual undefined: the plain norm; otherwise the residual add + norm, which also returns h.
NormForwardResult CudaNormForward(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& gamma,
                                  const at::Tensor& beta, const NormParams& params) {
  CheckNormForwardInputs(x, gamma, beta, params, /*allow_float64=*/false);
  if (residual.defined()) CheckNormResidualInput(residual, x, "residual");
  TORCH_CHECK(x.is_cuda(), "CUDA norm: x must be a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::TensorOptions stats_options = x.options().dtype(at::kFloat);
  NormForwardResult out;
  out.y = at::empty(x.sizes(), x.options());
  out.rstd = at::empty(LeadingSizes(x), stats_options);
  if (params.kind == NormKind::kLayerNorm) out.mean = at::empty(LeadingSizes(x), stats_options);
  if (residual.defined()) out.h = at::empty(x.sizes(), x.options());

  NormForwardArgs args;
  args.x = x.data_ptr();
  args.residual = residual.defined() ? residual.data_ptr() : nullptr;
  args.h = out.h.defined() ? out.h.data_ptr() : nullptr;
  args.gamma = gamma.data_ptr();
  args.beta = beta.defined() ? beta.data_ptr() : nullptr;
  args.y = out.y.data_ptr();
  args.mean = out.mean.defined() ? out.mean.data_ptr<float>() : nullptr;
  args.rstd = out.rstd.data_ptr<float>();
  args.hidden = x.size(-1);
  args.rows = x.numel() / args.hidden;
  args.x_dtype = ToNormDtype(x.scalar_type());
  args.w_dtype = ToNormDtype(gamma.scalar_type());
  const cudaError_t err = LaunchNormForward(args, params, c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA norm forward (x ", x.sizes(), " ", x.scalar_type(), ", gamma ",
              gamma.scalar_type(), "): ", cudaGetErrorString(err));
  return out;
}

// dh undefined: the plain norm's backward; otherwise dh is added to dx (the residual add + norm's backward).
NormBackwardResult CudaNormBackward(const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& x,
                                    const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
                                    const NormParams& params) {
  CheckNormBackwardInputs(dy, x, gamma, mean, rstd, params, /*allow_float64=*/false);
  if (dh.defined()) CheckNormResidualInput(dh, x, "dh");
  TORCH_CHECK(x.is_cuda(), "CUDA norm: x must be a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int device = x.device().index();
  NormBackwardArgs args;
  args.hidden = x.size(-1);
  args.rows = x.numel() / args.hidden;
  args.num_sms = NumSms(device);

  NormBackwardResult out;
  out.dx = at::empty(x.sizes(), x.options());
  out.dgamma = at::empty({args.hidden}, gamma.options());
  if (params.kind == NormKind::kLayerNorm) out.dbeta = at::empty({args.hidden}, gamma.options());
  const at::Tensor workspace = at::empty(
      {static_cast<int64_t>(NormBackwardWorkspaceFloats(args.rows, args.hidden, args.num_sms))},
      x.options().dtype(at::kFloat));

  args.dy = dy.data_ptr();
  args.dh = dh.defined() ? dh.data_ptr() : nullptr;
  args.x = x.data_ptr();
  args.gamma = gamma.data_ptr();
  args.mean = mean.defined() ? mean.data_ptr<float>() : nullptr;
  args.rstd = rstd.data_ptr<float>();
  args.dx = out.dx.data_ptr();
  args.dgamma = out.dgamma.data_ptr();
  args.dbeta = out.dbeta.defined() ? out.dbeta.data_ptr() : nullptr;
  args.workspace = workspace.data_ptr<float>();
  args.x_dtype = ToNormDtype(x.scalar_type());
  args.w_dtype = ToNormDtype(gamma.scalar_type());
  const cudaError_t err = LaunchNormBackward(args, params, c10::cuda::getCurrentCUDAStream(device));
  TORCH_CHECK(err == cudaSuccess, "CUDA norm backward (x ", x.sizes(), " ", x.scalar_type(), ", gamma ",
              gamma.scalar_type(), "): ", cudaGetErrorString(err));
  return out;
}

// Static registration (see norm.h); the BUILD target is alwayslink so the linker keeps this object.
const bool kRegistered = [] {
  RegisterCudaNormImpl(&CudaNormForward, &CudaNormBackward);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
