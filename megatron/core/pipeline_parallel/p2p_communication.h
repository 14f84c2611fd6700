// Point-to-point messages between adjacent pipeline stages (Megatron's pipeline_parallel/p2p_communication.py)
// over the pipeline group, with the shape exchanged in every message so that stages never have to agree on
// tensor shapes in advance (a shape mismatch is the classic source of pipeline hangs, research notes §8.3).
//
// A message is two Gloo messages to the same peer: a header (int64 [2 + kMaxDims]: ndim, dtype, sizes) with tag
// 2·tag, then the data with tag 2·tag + 1. Sends are non-blocking and kept until WaitSends(); receives block
// until the message arrives or the group's deadline passes (the error names the rank, group, direction and tag).
// Because a message is matched by (peer, tag), the order in which the two sides post them does not matter: the
// schedule gives every (direction, chunk, micro-batch) its own tag.
//
// Ring neighbours: "next" is pipeline rank r + 1 and "prev" r − 1, wrapping around (the interleaved schedule
// passes activations from the last rank back to the first). The group's rank order must be the pipeline order
// (parallel_state's pipeline groups are).
#pragma once

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

  // Starts sending a CPU tensor (made contiguous; kept alive until sent) to a group rank.
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
};

}  // namespace megatron::pipeline_parallel
