// The ATen glue of the multi-tensor AdamW kernel: checks, the tensor and chunk tables (built on the host in pinned
// memory, copied to the device asynchronously on the current stream; the caching host allocator keeps the pinned
// block alive until that copy has run), one launch, and registration as adam.h's CUDA implementation.
//
// The tables are rebuilt every step rather than cached: gradients are re-allocated after ZeroGrad, so their
// pointers change, and the table costs ~48 bytes per tensor plus 8 per chunk (~70 KB for GPT-2 124M).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <limits>

#include "megatron/core/fusions/adam/adam.h"
#include "megatron/core/fusions/adam/adam_kernel.h"

namespace megatron::fusions {
namespace {

AdamWDtype ToAdamWDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return AdamWDtype::kFloat32;
    case at::kBFloat16:
      return AdamWDtype::kBFloat16;
    case at::kHalf:
      return AdamWDtype::kFloat16;
    default:
      TORCH_CHECK(false, "CUDA multi-tensor AdamW: unsupported dtype ", t);
  }
}

bool Aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

void CudaMultiTensorAdamW(const AdamWTensorLists& l, const AdamWStepParams& params) {
  CheckAdamWInputs(l, /*allow_float64=*/false);
  const size_t n = l.params.size();
  if (n == 0) return;
  const at::Device device = l.params[0].device();
  const c10::cuda::CUDAGuard guard(device);
  const bool copies = !l.model_copies.empty();

  int64_t num_chunks = 0;
  for (const at::Tensor& p : l.params) num_chunks += (p.numel() + kAdamWChunkElems - 1) / kAdamWChunkElems;
  TORCH_CHECK(num_chunks <= std::numeric_limits<int32_t>::max(), "CUDA multi-tensor AdamW: ", num_chunks,
              " chunks exceed one launch's grid; split the list");
  if (num_chunks == 0) return;

  // [tensors | chunks] in one pinned buffer, so one copy moves both. AdamWTensorMeta is 8-byte aligned and a
  // multiple of 8 bytes, so the chunk table that follows is aligned too.
  const int64_t tensor_bytes = static_cast<int64_t>(n * sizeof(AdamWTensorMeta));
  const int64_t bytes = tensor_bytes + num_chunks * static_cast<int64_t>(sizeof(AdamWChunk));
  at::Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  auto* metas = reinterpret_cast<AdamWTensorMeta*>(host.data_ptr());
  auto* chunks = reinterpret_cast<AdamWChunk*>(static_cast<uint8_t*>(host.data_ptr()) + tensor_bytes);
  int64_t c = 0;
  for (size_t i = 0; i < n; ++i) {
    AdamWTensorMeta& m = metas[i];
    m.param = l.params[i].data_ptr<float>();
    m.grad = l.grads[i].data_ptr();
    m.exp_avg = l.exp_avgs[i].data_ptr<float>();
    m.exp_avg_sq = l.exp_avg_sqs[i].data_ptr<float>();
    m.model_copy = copies ? l.model_copies[i].data_ptr() : nullptr;
    m.numel = l.params[i].numel();
    m.decay = l.decay[i] ? 1 : 0;
    m.aligned = Aligned16(l.params[i]) && Aligned16(l.grads[i]) && Aligned16(l.exp_avgs[i]) &&
                Aligned16(l.exp_avg_sqs[i]) && (!copies || Aligned16(l.model_copies[i]));
    const int64_t tensor_chunks = (m.numel + kAdamWChunkElems - 1) / kAdamWChunkElems;
    for (int64_t k = 0; k < tensor_chunks; ++k) chunks[c++] = AdamWChunk{static_cast<int32_t>(i), static_cast<int32_t>(k)};
  }
  const at::Tensor table = host.to(device, /*non_blocking=*/true);

  AdamWLaunchArgs args;
  args.tensors = reinterpret_cast<const AdamWTensorMeta*>(table.data_ptr());
  args.chunks = reinterpret_cast<const AdamWChunk*>(static_cast<const uint8_t*>(table.data_ptr()) + tensor_bytes);
  args.num_chunks = num_chunks;
  args.grad_dtype = ToAdamWDtype(l.grads[0].scalar_type());
  args.copy_dtype = copies ? ToAdamWDtype(l.model_copies[0].scalar_type()) : AdamWDtype::kNone;
  const cudaError_t err = LaunchMultiTensorAdamW(args, MakeAdamWScalars(params),
                                                 c10::cuda::getCurrentCUDAStream(device.index()));
  TORCH_CHECK(err == cudaSuccess, "CUDA multi-tensor AdamW (", n, " tensors, ", num_chunks, " chunks): ",
              cudaGetErrorString(err));
}

const bool kRegistered = [] {
  RegisterCudaAdamWImpl(&CudaMultiTensorAdamW);
  return true;
}();

}  // namespace
}  // namespace megatron::fusions
