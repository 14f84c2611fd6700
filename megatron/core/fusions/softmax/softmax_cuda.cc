// The ATen glue of the CUDA softmax kernels: checks, allocation on x's device, launch on its current stream, and
// registration as the CUDA implementation of softmax.h before main runs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "megatron/core/fusions/softmax/softmax.h"
#include "megatron/core/fusions/softmax/softmax_kernel.h"

namespace megatron::fusions {
namespace {

SoftmaxDtype ToSoftmaxDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return SoftmaxDtype::kFloat32;
    case at::kBFloat16:
      return SoftmaxDtype::kBFloat16;
    case at::kHalf:
      return SoftmaxDtype::kFloat16;
    default:
      TORCH_CHECK(false, "CUDA softmax: unsupported dtype ", t, " (float32, bfloat16 or float16)");
  }
}

at::Tensor CudaSoftmaxForward(const at::Tensor& x, const at::Tensor& mask, const SoftmaxParams& params) {
  CheckSoftmaxForwardInputs(x, mask, params, /*allow_float64=*/false);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options());
  SoftmaxForwardArgs args;
  args.x = x.data_ptr();
  args.y = y.data_ptr();
  args.sq = x.size(-2);
  args.sk = x.size(-1);
  args.rows = args.sk == 0 ? 0 : x.numel() / args.sk;
  args.dtype = ToSoftmaxDtype(x.scalar_type());
  if (params.mask == SoftmaxMask::kExplicit) {
    args.mask = static_cast<const uint8_t*>(mask.data_ptr());  // bool is one byte, 0 or 1
    args.heads = x.size(1);
    args.mask_batches = mask.size(0);
  }
  const cudaError_t err = LaunchSoftmaxForward(args, params, c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA softmax forward (x ", x.sizes(), " ", x.scalar_type(),
              "): ", cudaGetErrorString(err));
  return y;
}

at::Tensor CudaSoftmaxBackward(const at::Tensor& dy, const at::Tensor& y, const SoftmaxParams& params) {
  CheckSoftmaxBackwardInputs(dy, y, params, /*allow_float64=*/false);
  const c10::cuda::CUDAGuard guard(y.device());
  at::Tensor dx = at::empty(y.sizes(), y.options());
  SoftmaxBackwardArgs args;
  args.dy = dy.data_ptr();
  args.y = y.data_ptr();
  args.dx = dx.data_ptr();
  args.sq = y.size(-2);
  args.sk = y.size(-1);
  args.rows = args.sk == 0 ? 0 : y.numel() / args.sk;
  args.dtype = ToSoftmaxDtype(y.scalar_type());
  const cudaError_t err = LaunchSoftmaxBackward(args, params, c10::cuda::getCurrentCUDAStream(y.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA softmax backward (y ", y.sizes(), " ", y.scalar_type(),
              "): ", cudaGetErrorString(err));
  return dx;
}

const bool kRegistered = [] {
  RegisterCudaSoftmaxImpl(&CudaSoftmaxForward, &CudaSoftmaxBackward);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
