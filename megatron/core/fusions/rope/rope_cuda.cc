// The ATen glue of the CUDA rotary position embedding: checks, allocation on t's device, launch on its current
// stream, and registration as the CUDA implementation of rope.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "megatron/core/fusions/rope/rope.h"
#include "megatron/core/fusions/rope/rope_kernel.h"

namespace megatron::fusions {
namespace {

RopeDtype ToRopeDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return RopeDtype::kFloat32;
    case at::kBFloat16:
      return RopeDtype::kBFloat16;
    case at::kHalf:
      return RopeDtype::kFloat16;
    default:
      TORCH_CHECK(false, "CUDA rope: unsupported dtype ", t, " (float32, bfloat16 or float16)");
  }
}

at::Tensor CudaRope(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params, bool backward) {
  CheckRopeInputs(t, freqs, /*allow_float64=*/false);
  const c10::cuda::CUDAGuard guard(t.device());
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
  RopeArgs args;
  args.in = t.data_ptr();
  args.freqs = freqs.data_ptr<float>();
  args.out = out.data_ptr();
  args.s = t.size(0);
  args.b = t.size(1);
  args.n = t.size(2);
  args.d = t.size(3);
  args.r = freqs.size(3);
  args.stride_s = t.stride(0);
  args.stride_b = t.stride(1);
  args.stride_n = t.stride(2);
  args.dtype = ToRopeDtype(t.scalar_type());
  args.backward = backward;
  const cudaError_t err = LaunchRope(args, params, c10::cuda::getCurrentCUDAStream(t.device().index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA rope ", backward ? "backward" : "forward", " (t ", t.sizes(), " strides ",
              t.strides(), " ", t.scalar_type(), ", freqs ", freqs.sizes(), "): ", cudaGetErrorString(err));
  return out;
}

at::Tensor CudaRopeForward(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params) {
  return CudaRope(t, freqs, params, /*backward=*/false);
}

at::Tensor CudaRopeBackward(const at::Tensor& dy, const at::Tensor& freqs, const RopeParams& params) {
  return CudaRope(dy, freqs, params, /*backward=*/true);
}

const bool kRegistered = [] {
  RegisterCudaRopeImpl(&CudaRopeForward, &CudaRopeBackward);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
