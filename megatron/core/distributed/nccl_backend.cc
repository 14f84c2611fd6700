// NCCL process groups (c10d::ProcessGroupNCCL from libtorch_cuda) for Backend::kNccl. Linking this library
// (alwayslink) is what makes InitDistributed(kNccl) available; see nccl_hook.h.
//
// Each rank must select its GPU (c10::cuda::set_device(local_rank)) before its first CUDA collective: NCCL
// communicators are created lazily on the device of the first tensor.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "megatron/core/distributed/nccl_hook.h"

namespace megatron::distributed {
namespace {

c10::intrusive_ptr<c10d::Backend> MakeNccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                           std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}

const bool registered = [] {
  RegisterNcclFactory(&MakeNccl);
  return true;
}();

}  // namespace
}  // namespace megatron::distributed
