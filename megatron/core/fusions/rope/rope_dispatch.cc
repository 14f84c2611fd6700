// RopeForward / RopeBackward: CUDA tensors go to the kernels that rope_cuda.cc registers
// (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/common/cuda_registry.h"
#include "megatron/core/fusions/rope/rope.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct RopeTag, RopeFn, RopeFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/rope:rope_cuda";

}  // namespace

void RegisterCudaRopeImpl(RopeFn forward, RopeFn backward) { Registry::Register(forward, backward); }

bool HasCudaRopeImpl() { return Registry::Has(); }

at::Tensor RopeForward(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params) {
  TORCH_CHECK(t.defined(), "RopeForward: t must be defined");
  if (t.is_cuda()) return Registry::Forward("RopeForward", kCudaTarget)(t, freqs, params);
  return RopeForwardReference(t, freqs, params);
}

at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& freqs, const RopeParams& params) {
  TORCH_CHECK(dy.defined(), "RopeBackward: dy must be defined");
  if (dy.is_cuda()) return Registry::Backward("RopeBackward", kCudaTarget)(dy, freqs, params);
  return RopeBackwardReference(dy, freqs, params);
}

}  // namespace megatron::fusions
