// Process groups over c10d: rendezvous, the world group, subgroups and blocking collectives with deadlines.
//
//   absl::StatusOr<LaunchEnv> env = LaunchEnv::FromEnvironment();
//   auto ctx = InitDistributed(*env, Backend::kGloo, absl::Seconds(30));   // collective: every rank calls it
//   auto tp = (*ctx)->NewGroup({0, 1}, "tp");   // collective over the WORLD, in the same order on every rank
//   if (*tp) (*tp)->AllReduce(t, ReduceOp::kSum);   // nullptr on ranks outside {0, 1}
//
// Rendezvous: rank 0 hosts a c10d TCPStore at MASTER_ADDR:MASTER_PORT, the others connect to it; the world
// group is a ProcessGroupGloo over that store, followed by a barrier so that no rank (rank 0 in particular,
// which serves the store) can leave before everyone has finished reading it. NewGroup builds a group over a
// PrefixStore keyed by a per-context counter and the name, so every rank must create groups in the same
// order (as torch.distributed.new_group requires), including ranks that are not members.
//
// Collectives are blocking: each waits at most the context's timeout. A timeout, or a peer that died (Gloo
// sees the TCP connection close), becomes a Status whose message names this rank, the group and the
// collective: "rank 1: all_reduce on group tp[0,1] timed out after 10s (is a rank dead?)". After such an
// error the group is unusable (the other ranks are out of step); the job should exit.
//
// Ranks passed to Broadcast/Send/Recv are ranks *within the group* (torch's group_src/group_dst).
// Tensors must be CPU and contiguous for Gloo. Avg is computed as sum then divide (Gloo has no AVG).
//
// InitDistributed sets SIGPIPE to SIG_IGN if it has its default action: Gloo may write to the socket of a
// peer that died, and the default action would kill this rank instead of failing the collective.
//
// Backend::kNccl ("cpu:gloo,cuda:nccl" in torch terms): every group also gets an NCCL communicator and the
// tensor's device picks the backend (CUDA tensors: NCCL; CPU tensors and barriers: Gloo). It needs
// //megatron/core/distributed:nccl linked in (--config=cuda); otherwise InitDistributed says so. Each rank
// selects its GPU (local_rank) before its first CUDA collective. c10d headers stay in the .cc.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "megatron/core/distributed/launch_env.h"

namespace megatron::distributed {

enum class Backend { kGloo, kNccl };
enum class ReduceOp { kSum, kAvg, kMax, kMin };

class DistributedContext;

// A started operation (ISend / IRecv / IAllReduce). Wait() blocks until it completes or the group's deadline
// passes, with the same error messages as the blocking forms. A Work that is never waited may still be running:
// keep the tensors it reads or writes alive until Wait() returns. Movable, not copyable.
class Work {
 public:
  struct Impl;
  Work();
  explicit Work(std::unique_ptr<Impl> impl);
  Work(Work&&) noexcept;
  Work& operator=(Work&&) noexcept;
  ~Work();
  absl::Status Wait();

 private:
  std::unique_ptr<Impl> impl_;
};

// One process group. Thread-compatible: issue its collectives from one thread.
class Group {
 public:
  struct Impl;
  explicit Group(std::shared_ptr<Impl> impl);
  ~Group();

  // "tp[0,1]": the name given to NewGroup and the global ranks.
  const std::string& name() const;
  const std::vector<int>& ranks() const;  // global ranks of the members, in group-rank order
  int rank() const;                       // this process's rank within the group
  int size() const;

  // In place over all members.
  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // One tensor per group rank, each shaped like `input` (which must have the same shape on every rank).
  absl::StatusOr<std::vector<at::Tensor>> AllGather(const at::Tensor& input);
  // The same, concatenated along dim 0 (group-rank order): [size * input.size(0), ...].
  absl::StatusOr<at::Tensor> AllGatherConcat(const at::Tensor& input);
  // `input` is split along dim 0 into size() equal chunks; returns the reduction of chunk rank() across
  // all members. input.size(0) must be divisible by size().
  absl::StatusOr<at::Tensor> ReduceScatter(const at::Tensor& input, ReduceOp op = ReduceOp::kSum);
  // In place: every member ends with `root`'s tensor (root is a group rank).
  absl::Status Broadcast(at::Tensor& tensor, int root);
  // Point to point with a group rank. Recv writes into `tensor` (preallocated with the sender's shape).
  absl::Status Send(const at::Tensor& tensor, int dst, int tag = 0);
  absl::Status Recv(at::Tensor& tensor, int src, int tag = 0);
  // Non-blocking forms: start the operation and return at once. A send and a receive posted together never
  // deadlock against a peer doing the same (Megatron's batched send/recv); a message is matched by (peer, tag).
  absl::StatusOr<Work> ISend(const at::Tensor& tensor, int dst, int tag = 0);
  absl::StatusOr<Work> IRecv(at::Tensor& tensor, int src, int tag = 0);
  // In place, like AllReduce (kAvg is divided when Wait() returns). Collectives started this way must be
  // started in the same order on every member.
  absl::StatusOr<Work> IAllReduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  absl::Status Barrier();

 private:
  std::shared_ptr<Impl> impl_;
};

class DistributedContext {
 public:
  struct Impl;
  explicit DistributedContext(std::unique_ptr<Impl> impl);
  ~DistributedContext();

  int rank() const;
  int world_size() const;
  int local_rank() const;
  absl::Duration timeout() const;
  Backend backend() const;

  // The group of all ranks, named "world".
  Group& world();

  // Collective over the world: every rank calls it with the same `ranks` in the same order. Returns the
  // group on members and nullptr elsewhere. `ranks` must be distinct and in [0, world_size); group rank i
  // is ranks[i]. InvalidArgument naming `ranks` otherwise.
  absl::StatusOr<std::shared_ptr<Group>> NewGroup(const std::vector<int>& ranks, const std::string& name = "group");

 private:
  std::unique_ptr<Impl> impl_;
};

// Collective over all ranks of `env`. Returns DeadlineExceeded if not every rank arrives within `timeout`,
// Unimplemented for kNccl when //megatron/core/distributed:nccl is not linked, InvalidArgument for a
// non-positive timeout.
absl::StatusOr<std::shared_ptr<DistributedContext>> InitDistributed(const LaunchEnv& env, Backend backend,
                                                                    absl::Duration timeout);

const char* ReduceOpName(ReduceOp op);

}  // namespace megatron::distributed
