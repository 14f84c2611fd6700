// Data-parallel gradient reduction overlapped with backward (Megatron's core DistributedDataParallel, grad side).
//
// Every parameter's .grad is a view into one contiguous buffer (Megatron's main_grad buffer; autograd accumulates
// micro-batch gradients into it in place). The buffer is cut into buckets of about bucket_size elements at
// parameter boundaries, in reverse parameter order (the order backward produces gradients). A post-accumulate-grad
// hook on each parameter counts its gradients; once every parameter of a bucket has received the iteration's
// last one (num_microbatches of them: Megatron's no_sync on the earlier micro-batches), the bucket's
// all-reduce over the data-parallel group starts asynchronously while backward goes on. Buckets start strictly in
// bucket order, so every rank issues the same collectives in the same order. FinishIteration starts any bucket
// still waiting (a parameter without a gradient this iteration contributes zeros), waits for all of them and
// divides by the group size (the gradient average of Megatron's DDP).
//
//   auto ddp = DataParallelGrads::Create(model.NamedParameters(), dp_group, {.bucket_size = 1 << 20});
//   ddp->StartIteration(num_microbatches);       // zeroes the buffer, points .grad at it, arms the hooks
//   ... num_microbatches backward passes ...
//   ddp->FinishIteration();                      // grads averaged over DP, ready for clipping and the optimizer
//
// All parameters must be CPU or all on one device and share one dtype (the trainer keeps fp32 parameters; bf16
// enters through autocast). The buffer is padded to a multiple of the group size so that the distributed
// optimizer can shard it evenly. The object must outlive the backward passes it hooks (hooks are removed on
// destruction). Not thread-safe: one training loop drives it.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/distributed/process_group.h"

namespace megatron::distributed {

struct DataParallelOptions {
  int64_t bucket_size = 40'000'000;  // elements; Megatron's default is max(40M, 1M x DP)
};

class DataParallelGrads {
 public:
  // One parameter's place in the buffer.
  struct Entry {
    std::string name;
    at::Tensor param;
    int64_t offset = 0;  // into buffer()
    int64_t numel = 0;
  };

  // InvalidArgument for an empty list, mixed dtypes/devices, or a non-positive bucket size.
  static absl::StatusOr<std::unique_ptr<DataParallelGrads>> Create(
      const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, Group* dp_group,
      const DataParallelOptions& options = {});
  ~DataParallelGrads();
  DataParallelGrads(const DataParallelGrads&) = delete;
  DataParallelGrads& operator=(const DataParallelGrads&) = delete;

  void StartIteration(int num_microbatches);
  absl::Status FinishIteration();

  const at::Tensor& buffer() const { return buffer_; }  // [padded numel], the parameters' dtype
  const std::vector<Entry>& entries() const { return entries_; }
  int64_t numel() const { return numel_; }  // without the padding
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Buckets whose all-reduce started from a backward hook (rather than in FinishIteration) in the last
  // iteration: the overlap of communication with backward.
  int buckets_started_in_backward() const { return started_in_backward_; }
  Group* group() const { return group_; }

  // Called by the hooks.
  void OnGradAccumulated(int entry);

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;  // buffer range
    int num_entries = 0;
    int ready = 0;
    bool started = false;
    Work work;
  };
  DataParallelGrads() = default;
  void StartReadyBuckets(bool from_hook);

  Group* group_ = nullptr;
  at::Tensor buffer_;
  int64_t numel_ = 0;
  std::vector<Entry> entries_;
  std::vector<int> bucket_of_;  // per entry
  std::vector<int> counts_;     // gradients received this iteration, per entry
  std::vector<Bucket> buckets_;
  int expected_ = 1;
  int next_bucket_ = 0;
  int started_in_backward_ = 0;
  bool armed_ = false;
  absl::Status error_;  // first failure to start a bucket from a hook (reported by FinishIteration)
};

}  // namespace megatron::distributed
