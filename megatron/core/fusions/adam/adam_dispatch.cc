// MultiTensorAdamW: CUDA lists go to the kernel that adam_cuda.cc registers, CPU lists to the float64 reference.
// One entry point only, so a plain function pointer rather than common/cuda_registry.h's forward/backward pair.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/adam/adam.h"

namespace megatron::fusions {
namespace {

AdamWStepFn& CudaImpl() {
  static AdamWStepFn fn = nullptr;  // function-local: safe from other translation units' static initialisers
  return fn;
}

}  // namespace

void RegisterCudaAdamWImpl(AdamWStepFn step) { CudaImpl() = step; }

bool HasCudaAdamWImpl() { return CudaImpl() != nullptr; }

void MultiTensorAdamW(const AdamWTensorLists& lists, const AdamWStepParams& params) {
  if (lists.params.empty()) return;
  if (lists.params[0].is_cuda()) {
    TORCH_CHECK(HasCudaAdamWImpl(), "MultiTensorAdamW: got CUDA tensors but this binary has no CUDA kernel for it; "
                "build with --config=cuda and depend on //megatron/core/fusions/adam:adam_cuda (or move the "
                "tensors to the CPU)");
    CudaImpl()(lists, params);
    return;
  }
  MultiTensorAdamWReference(lists, params);
}

}  // namespace megatron::fusions
