// Internal: how process_group.cc reaches NCCL without depending on CUDA. //megatron/core/distributed:nccl
// (built only under --config=cuda, alwayslink) registers a factory from a static initialiser; CPU builds have
// none, and InitDistributed(kNccl) then says how to get it.
#pragma once

#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace megatron::distributed {

using NcclFactory = c10::intrusive_ptr<c10d::Backend> (*)(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                          int size, std::chrono::milliseconds timeout);

void RegisterNcclFactory(NcclFactory factory);
bool NcclAvailable();
// Throws (c10::Error) when no factory is registered.
c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                  std::chrono::milliseconds timeout);

}  // namespace megatron::distributed
