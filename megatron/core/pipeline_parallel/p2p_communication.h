// Point-to-point messages between adjacent pipeline stages (Megatron's pipeline_parallel/p2p_communication.py)
// over the pipeline group, with the shape exchanged in every message so that stages never have to agree on
// tensor shapes in advance (a shape mismatch is the classic source of pipeline hangs, research notes §8.3).
//
// A message is a header (a CPU int64 tensor over Gloo: ndim, dtype, device, tag, sizes) followed by the data
// (over Gloo for CPU tensors, NCCL for CUDA tensors; the receiver allocates on its current CUDA device). Both
// travel in FIFO order per peer: NCCL has no tags, so the tag rides in the header, and a receiver that wants
// tag T while an earlier message with another tag is first in line receives that one into a stash (it is
// asked for later). So the order in which the two sides post messages does not matter, on either backend:
// the schedule gives every (direction, chunk, micro-batch) its own tag. Sends are non-blocking and kept until
// WaitSends(); receives wait until the message arrives or the group's deadline passes (the error names the
// rank, group, direction and tag). On NCCL, "arrives" is stream-ordered: the data is ready for kernels queued
// on the current stream after Recv returns.
//
// Ring neighbours: "next" is pipeline rank r + 1 and "prev" r − 1, wrapping around (the interleaved schedule
// passes activations from the last rank back to the first). The group's rank order must be the pipeline order
// (parallel_state's pipeline groups are).
#pragma once

#include <map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/distributed/process_group.h"

namespace megatron::pipeline_parallel {

class PipelineP2P {
 public:
  static constexpr int kMaxDims = 6;

  explicit PipelineP2P(distributed::Group* pipeline_group);  // must outlive this object; size >= 2
  ~PipelineP2P();  // does not wait: call WaitSends() first

  int rank() const { return group_->rank(); }
  int size() const { return group_->size(); }
  int next() const { return (rank() + 1) % size(); }
  int prev() const { return (rank() + size() - 1) % size(); }

  // Starts sending a CPU or CUDA tensor (made contiguous; kept alive until sent) to a group rank.
  absl::Status Send(const at::Tensor& tensor, int dst, int tag);
  // Receives a tensor of whatever shape and dtype the peer sent with `tag`.
  absl::StatusOr<at::Tensor> Recv(int src, int tag);
  // Waits for every send started so far.
  absl::Status WaitSends();

 private:
  distributed::Group* group_;
  struct Pending {
    distributed::Work header, data;
  };
  std::vector<Pending> pending_;
  std::map<std::pair<int, int>, at::Tensor> stash_;  // (src, tag) -> received ahead of being asked for
  std::vector<bool> cuda_linked_;                     // per group rank: NCCL links to it set up

  // NCCL creates a pair's communicator on the first message, blocking the host until the peer creates it too,
  // and each direction has its own communicator (Note [NCCL point-to-point directions]). Two ranks whose first
  // CUDA messages go opposite ways would each wait in a different creation. So before the first CUDA payload to
  // or from a peer (after the header is posted, which the peer may be waiting for), both ranks exchange a
  // one-element message up and then down, creating the two communicators in the same order.
  absl::Status LinkCuda(int peer, const at::Device& device);
};

}  // namespace megatron::pipeline_parallel
