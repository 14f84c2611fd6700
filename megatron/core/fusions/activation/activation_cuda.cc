// The ATen glue of the CUDA bias + activation kernels: checks, allocation on x's device, launch on its current
// stream, dbias as an ATen column sum of dx, and registration as the CUDA implementation of activation.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "megatron/core/fusions/activation/activation.h"
#include "megatron/core/fusions/activation/activation_kernel.h"

namespace megatron::fusions {
namespace {

ActivationDtype ToActivationDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return ActivationDtype::kFloat32;
    case at::kBFloat16:
      return ActivationDtype::kBFloat16;
    case at::kHalf:
      return ActivationDtype::kFloat16;
    default:
      TORCH_CHECK(false, "CUDA bias activation: unsupported dtype ", t, " (float32, bfloat16 or float16)");
  }
}

ActivationArgs MakeArgs(const at::Tensor& x, const at::Tensor& bias) {
  ActivationArgs args;
  args.x = x.data_ptr();
  args.bias = bias.defined() ? bias.data_ptr() : nullptr;
  args.cols = x.size(-1);
  args.rows = x.numel() / args.cols;
  args.dtype = ToActivationDtype(x.scalar_type());
  return args;
}

at::Tensor CudaActivationForward(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind) {
  CheckActivationInputs(x, bias, kind, /*allow_float64=*/false);
  const c10::cuda::CUDAGuard guard(x.device());
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  if (kind == ActivationKind::kSwiGLU) sizes.back() /= 2;
  at::Tensor y = at::empty(sizes, x.options());
  ActivationArgs args = MakeArgs(x, bias);
  args.out = y.data_ptr();
  const cudaError_t err = LaunchActivationForward(args, kind, c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA bias activation forward (x ", x.sizes(), " ", x.scalar_type(),
              "): ", cudaGetErrorString(err));
  return y;
}

ActivationBackwardResult CudaActivationBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                                ActivationKind kind) {
  CheckActivationBackwardInputs(dy, x, bias, kind, /*allow_float64=*/false);
  const c10::cuda::CUDAGuard guard(x.device());
  ActivationBackwardResult out;
  out.dx = at::empty(x.sizes(), x.options());
  ActivationArgs args = MakeArgs(x, bias);
  args.dy = dy.data_ptr();
  args.out = out.dx.data_ptr();
  const cudaError_t err = LaunchActivationBackward(args, kind, c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA bias activation backward (x ", x.sizes(), " ", x.scalar_type(),
              "): ", cudaGetErrorString(err));
  if (bias.defined()) {
    // Float32 accumulation, then x's dtype.
    out.dbias = at::sum(out.dx.view({-1, args.cols}), {0}, /*keepdim=*/false, at::kFloat).to(x.scalar_type());
  }
  return out;
}

const bool kRegistered = [] {
  RegisterCudaActivationImpl(&CudaActivationForward, &CudaActivationBackward);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
