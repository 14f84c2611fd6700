// AttentionForward / AttentionBackward (dense and packed): CUDA tensors go to the ATen entry points that
// attention_cuda.cc registers (common/cuda_registry.h), everything else to the float64 reference.
#include <ATen/core/Tensor.h>

#include "megatron/core/fusions/attention/attention.h"
#include "megatron/core/fusions/common/cuda_registry.h"

namespace megatron::fusions {
namespace {

using Registry = common::CudaImplRegistry<struct AttentionTag, AttentionForwardFn, AttentionBackwardFn>;
constexpr const char* kCudaTarget = "//megatron/core/fusions/attention:attention_cuda";

// A CPU call runs the reference whatever params.impl says, except that forcing a CUDA kernel is an error: the
// caller asked for something that will not happen.
void CheckCpuImpl(const AttentionParams& params, const char* op) {
  TORCH_CHECK(params.impl == AttentionImpl::kAuto || params.impl == AttentionImpl::kReference, op, ": impl=",
              AttentionImplName(params.impl), " needs CUDA tensors (CPU tensors run the reference; use auto)");
}

}  // namespace

void RegisterCudaAttentionImpl(AttentionForwardFn forward, AttentionBackwardFn backward) {
  Registry::Register(forward, backward);
}

bool HasCudaAttentionImpl() { return Registry::Has(); }

AttentionForwardResult AttentionForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const AttentionParams& params) {
  TORCH_CHECK(q.defined(), "AttentionForward: q must be defined");
  if (q.is_cuda()) return Registry::Forward("AttentionForward", kCudaTarget)(q, k, v, nullptr, params);
  CheckCpuImpl(params, "AttentionForward");
  return AttentionForwardReference(q, k, v, params);
}

AttentionGrads AttentionBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const AttentionForwardResult& fwd,
                                 const AttentionParams& params) {
  TORCH_CHECK(q.defined() && fwd.out.defined(), "AttentionBackward: q and the forward result must be defined");
  if (q.is_cuda()) return Registry::Backward("AttentionBackward", kCudaTarget)(dout, q, k, v, fwd, nullptr, params);
  CheckCpuImpl(params, "AttentionBackward");
  return AttentionBackwardReference(dout, q, k, v, params);
}

AttentionForwardResult PackedAttentionForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const PackedSequences& seqs, const AttentionParams& params) {
  TORCH_CHECK(q.defined(), "PackedAttentionForward: q must be defined");
  if (q.is_cuda()) return Registry::Forward("PackedAttentionForward", kCudaTarget)(q, k, v, &seqs, params);
  CheckCpuImpl(params, "PackedAttentionForward");
  return PackedAttentionForwardReference(q, k, v, seqs, params);
}

AttentionGrads PackedAttentionBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const AttentionForwardResult& fwd,
                                       const PackedSequences& seqs, const AttentionParams& params) {
  TORCH_CHECK(q.defined() && fwd.out.defined(), "PackedAttentionBackward: q and the forward result must be defined");
  if (q.is_cuda()) {
    return Registry::Backward("PackedAttentionBackward", kCudaTarget)(dout, q, k, v, fwd, &seqs, params);
  }
  CheckCpuImpl(params, "PackedAttentionBackward");
  return PackedAttentionBackwardReference(dout, q, k, v, seqs, params);
}

}  // namespace megatron::fusions
