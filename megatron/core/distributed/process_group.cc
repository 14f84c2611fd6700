#include "megatron/core/distributed/process_group.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <set>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "megatron/core/distributed/nccl_hook.h"

namespace megatron::distributed {
namespace {

std::chrono::milliseconds ToChrono(absl::Duration d) { return std::chrono::milliseconds(absl::ToInt64Milliseconds(d)); }

// The message of an exception without libtorch's C++ backtrace (which would bury the one line that matters).
std::string ExceptionMessage(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

std::string FirstLine(const std::string& text) {
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

bool LooksLikeTimeout(const std::string& message) {
  return absl::StrContains(message, "timed out") || absl::StrContains(message, "Timed out") ||
         absl::StrContains(message, "timeout") || absl::StrContains(message, "Timeout");
}

bool IsLoopback(const std::string& addr) {
  return addr == "localhost" || absl::StartsWith(addr, "127.") || addr == "::1";
}

// Gloo binds one interface per process. GLOO_SOCKET_IFNAME wins (as in torch); a loopback master means a
// single-node job, so loopback is enough and avoids hostname resolution; otherwise let Gloo resolve this
// host's name.
std::shared_ptr<::gloo::transport::Device> MakeGlooDevice(const std::string& master_addr) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && ifname[0] != '\0') {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (IsLoopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

std::string GroupLabel(const std::string& name, const std::vector<int>& ranks) {
  return absl::StrCat(name, "[", absl::StrJoin(ranks, ","), "]");
}

NcclFactory g_nccl_factory = nullptr;

}  // namespace

void RegisterNcclFactory(NcclFactory factory) { g_nccl_factory = factory; }
bool NcclAvailable() { return g_nccl_factory != nullptr; }
c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                  std::chrono::milliseconds timeout) {
  TORCH_CHECK(g_nccl_factory != nullptr, "NCCL is not linked into this binary (//megatron/core/distributed:nccl)");
  return g_nccl_factory(store, rank, size, timeout);
}

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

struct Group::Impl {
  std::string label;       // "tp[0,1]"
  std::vector<int> ranks;  // global ranks
  int global_rank = 0;
  int group_rank = 0;
  absl::Duration timeout;
  c10::intrusive_ptr<c10d::Backend> backend;       // Gloo: CPU tensors (and barriers)
  c10::intrusive_ptr<c10d::Backend> cuda_backend;  // NCCL: CUDA tensors (Backend::kNccl only)
  // NCCL point-to-point from a higher to a lower group rank. See Note [NCCL point-to-point directions].
  c10::intrusive_ptr<c10d::Backend> cuda_backend_down;

  // torch's "cpu:gloo,cuda:nccl": the tensor's device picks the backend.
  const c10::intrusive_ptr<c10d::Backend>& For(const at::Tensor& t) const {
    return t.is_cuda() && cuda_backend ? cuda_backend : backend;
  }

  // Note [NCCL point-to-point directions]: NCCL matches sends and receives in posting order per communicator,
  // and ProcessGroupNCCL runs both directions between two ranks on one communicator and stream. A send blocks
  // its stream until the peer's receive is reached on the peer's stream, so two ranks that each post a send
  // before the receive of the other's message deadlock on the GPU (1F1B does exactly that: the first stage
  // sends an activation while the last stage sends a gradient). Messages from a lower to a higher group rank
  // therefore go through `cuda_backend` and the other direction through `cuda_backend_down`: every
  // (communicator, stream) then carries one direction only, and only the FIFO order within a direction matters.
  const c10::intrusive_ptr<c10d::Backend>& ForP2P(const at::Tensor& t, int from, int to) const {
    if (!t.is_cuda() || !cuda_backend) return backend;
    return from < to ? cuda_backend : cuda_backend_down;
  }

  // NCCL work completes in stream order: waiting makes the caller's current stream wait for it (no host
  // blocking, so kernels keep being queued). Passing a timeout to c10d's WorkNCCL::wait would instead busy-wait
  // on the host in 1 ms sleeps until the kernel ends. A hung NCCL collective is noticed by ProcessGroupNCCL's
  // watchdog after the group's timeout (set in its options), which logs the rank and the operation; measured on
  // 2x H200 it did not end the blocked process (tests/distributed:nccl_collectives_test, the DISABLED_ test), and
  // a rank missing at a communicator's creation (the group's first NCCL collective) blocks the others with no
  // timeout at all. Gloo (CPU tensors) ends within the timeout with the rank and collective named. With PyTorch's
  // TORCH_NCCL_BLOCKING_WAIT=1, ProcessGroupNCCL's own wait() blocks the host with the group's timeout and throws,
  // which Run/Work::Wait turn into the usual DeadlineExceeded status (slow: the pre-stream-ordered behaviour).
  void WaitFor(c10d::Work& work, bool stream_ordered) const {
    if (stream_ordered) {
      work.wait();
    } else {
      work.wait(ToChrono(timeout));
    }
  }

  std::string Prefix(const char* collective) const {
    return absl::StrCat("rank ", global_rank, ": ", collective, " on group ", label);
  }

  // Runs `issue` (which starts the collective) and waits for its Work with the deadline, turning every
  // failure into a Status that says who, where and what.
  // `on` is the tensor the collective works on (undefined for a barrier): a CUDA tensor means NCCL.
  absl::Status Run(const char* collective, const at::Tensor& on,
                   const std::function<c10::intrusive_ptr<c10d::Work>()>& issue) const {
    const bool stream_ordered = on.defined() && on.is_cuda() && cuda_backend;
    std::exception_ptr error;
    const absl::Time start = absl::Now();
    try {
      c10::intrusive_ptr<c10d::Work> work = issue();
      WaitFor(*work, stream_ordered);
      return absl::OkStatus();
    } catch (...) {
      error = std::current_exception();
    }
    return Failure(collective, error, start);
  }

  // The Status for an operation that threw `error` after starting at `start`.
  absl::Status Failure(const char* collective, const std::exception_ptr& error, absl::Time start) const {
    const std::string message = FirstLine(ExceptionMessage(error));
    if (LooksLikeTimeout(message) || absl::Now() - start >= timeout) {
      return absl::DeadlineExceededError(absl::StrCat(Prefix(collective), " timed out after ",
                                                      absl::FormatDuration(timeout), " (is a rank dead?): ", message));
    }
    return absl::UnavailableError(absl::StrCat(Prefix(collective), " failed (did a peer process die?): ", message));
  }

  absl::Status CheckTensor(const char* collective, const at::Tensor& t) const {
    if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(Prefix(collective), ": tensor is undefined"));
    if (!t.is_contiguous()) {
      return absl::InvalidArgumentError(absl::StrCat(Prefix(collective), ": tensor is not contiguous"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckPeer(const char* collective, const char* what, int peer) const {
    if (peer < 0 || peer >= static_cast<int>(ranks.size())) {
      return absl::InvalidArgumentError(absl::StrCat(Prefix(collective), ": ", what, "=", peer,
                                                     " is not a group rank (group size ", ranks.size(), ")"));
    }
    return absl::OkStatus();
  }
};

Group::Group(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;
const std::string& Group::name() const { return impl_->label; }
const std::vector<int>& Group::ranks() const { return impl_->ranks; }
int Group::rank() const { return impl_->group_rank; }
int Group::size() const { return static_cast<int>(impl_->ranks.size()); }

absl::Status Group::AllReduce(at::Tensor& tensor, ReduceOp op) {
  if (absl::Status s = impl_->CheckTensor("all_reduce", tensor); !s.ok()) return s;
  c10d::AllreduceOptions opts;
  opts.timeout = ToChrono(impl_->timeout);
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      opts.reduceOp = c10d::ReduceOp::SUM;
      break;  // Gloo has no AVG: sum, then divide
    case ReduceOp::kMax:
      opts.reduceOp = c10d::ReduceOp::MAX;
      break;
    case ReduceOp::kMin:
      opts.reduceOp = c10d::ReduceOp::MIN;
      break;
  }
  std::vector<at::Tensor> tensors{tensor};
  absl::Status status = impl_->Run("all_reduce", tensor, [&] { return impl_->For(tensor)->allreduce(tensors, opts); });
  if (status.ok() && op == ReduceOp::kAvg) tensor.div_(size());
  return status;
}

absl::StatusOr<std::vector<at::Tensor>> Group::AllGather(const at::Tensor& input) {
  if (absl::Status s = impl_->CheckTensor("all_gather", input); !s.ok()) return s;
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int i = 0; i < size(); ++i) outputs[0].push_back(at::empty_like(input));
  std::vector<at::Tensor> inputs{input};
  c10d::AllgatherOptions opts;
  opts.timeout = ToChrono(impl_->timeout);
  absl::Status status =
      impl_->Run("all_gather", input, [&] { return impl_->For(input)->allgather(outputs, inputs, opts); });
  if (!status.ok()) return status;
  return std::move(outputs[0]);
}

absl::StatusOr<at::Tensor> Group::AllGatherConcat(const at::Tensor& input) {
  if (input.defined() && input.is_cuda() && impl_->cuda_backend && input.dim() > 0) {
    // NCCL gathers straight into the concatenated buffer (no per-rank outputs to copy and cat).
    if (absl::Status s = impl_->CheckTensor("all_gather", input); !s.ok()) return s;
    std::vector<int64_t> sizes = input.sizes().vec();
    sizes[0] *= size();
    at::Tensor output = at::empty(sizes, input.options());
    at::Tensor in = input;
    c10d::AllgatherOptions opts;
    opts.timeout = ToChrono(impl_->timeout);
    absl::Status status =
        impl_->Run("all_gather", input, [&] { return impl_->cuda_backend->_allgather_base(output, in, opts); });
    if (!status.ok()) return status;
    return output;
  }
  absl::StatusOr<std::vector<at::Tensor>> parts = AllGather(input);
  if (!parts.ok()) return parts.status();
  return at::cat(*parts, 0);
}

absl::StatusOr<at::Tensor> Group::ReduceScatter(const at::Tensor& input, ReduceOp op) {
  if (absl::Status s = impl_->CheckTensor("reduce_scatter", input); !s.ok()) return s;
  if (input.dim() == 0 || input.size(0) % size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(impl_->Prefix("reduce_scatter"),
                                                   ": input.size(0)=", input.dim() == 0 ? 0 : input.size(0),
                                                   " is not divisible by the group size ", size()));
  }
  if (input.is_cuda() && impl_->cuda_backend) {  // NCCL: a real reduce-scatter (half the traffic of all-reduce)
    const int64_t chunk = input.size(0) / size();
    at::Tensor output = at::empty_like(input.narrow(0, 0, chunk));
    at::Tensor in = input;
    c10d::ReduceScatterOptions opts;
    opts.timeout = ToChrono(impl_->timeout);
    opts.reduceOp = op == ReduceOp::kMax ? c10d::ReduceOp::MAX
                    : op == ReduceOp::kMin ? c10d::ReduceOp::MIN
                                           : c10d::ReduceOp::SUM;
    absl::Status status = impl_->Run(
        "reduce_scatter", input, [&] { return impl_->cuda_backend->_reduce_scatter_base(output, in, opts); });
    if (!status.ok()) return status;
    if (op == ReduceOp::kAvg) output.div_(size());
    return output;
  }
  // Gloo's reduce_scatter is not implemented for every dtype/version; an all-reduce and a slice gives the
  // same result with twice the traffic, which is fine for the CPU backend used for tests and debugging.
  at::Tensor full = input.clone();
  if (absl::Status s = AllReduce(full, op); !s.ok()) {
    // Rename the collective so the error says what the caller called.
    std::string message(s.message());
    const std::string from = absl::StrCat(impl_->Prefix("all_reduce"));
    if (absl::StartsWith(message, from)) message = impl_->Prefix("reduce_scatter") + message.substr(from.size());
    return absl::Status(s.code(), message);
  }
  const int64_t chunk = input.size(0) / size();
  return full.narrow(0, chunk * rank(), chunk).clone();
}

absl::Status Group::Broadcast(at::Tensor& tensor, int root) {
  if (absl::Status s = impl_->CheckTensor("broadcast", tensor); !s.ok()) return s;
  if (absl::Status s = impl_->CheckPeer("broadcast", "root", root); !s.ok()) return s;
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.rootTensor = 0;
  opts.timeout = ToChrono(impl_->timeout);
  std::vector<at::Tensor> tensors{tensor};
  return impl_->Run("broadcast", tensor, [&] { return impl_->For(tensor)->broadcast(tensors, opts); });
}

absl::Status Group::Send(const at::Tensor& tensor, int dst, int tag) {
  if (absl::Status s = impl_->CheckTensor("send", tensor); !s.ok()) return s;
  if (absl::Status s = impl_->CheckPeer("send", "dst", dst); !s.ok()) return s;
  if (dst == rank()) return absl::InvalidArgumentError(impl_->Prefix("send") + ": dst is this rank");
  std::vector<at::Tensor> tensors{tensor};
  return impl_->Run("send", tensor,
                    [&] { return impl_->ForP2P(tensor, rank(), dst)->send(tensors, dst, tag); });
}

absl::Status Group::Recv(at::Tensor& tensor, int src, int tag) {
  if (absl::Status s = impl_->CheckTensor("recv", tensor); !s.ok()) return s;
  if (absl::Status s = impl_->CheckPeer("recv", "src", src); !s.ok()) return s;
  if (src == rank()) return absl::InvalidArgumentError(impl_->Prefix("recv") + ": src is this rank");
  std::vector<at::Tensor> tensors{tensor};
  return impl_->Run("recv", tensor,
                    [&] { return impl_->ForP2P(tensor, src, rank())->recv(tensors, src, tag); });
}

struct Work::Impl {
  std::shared_ptr<const Group::Impl> group;
  const char* collective = "";
  c10::intrusive_ptr<c10d::Work> work;
  absl::Time start;
  std::vector<at::Tensor> tensors;  // kept alive while the operation runs
  double divide_by = 1.0;           // kAvg all-reduce: sum, then divide on completion
  bool stream_ordered = false;      // NCCL: Wait() orders the current stream after it (see WaitFor)
};

Work::Work() = default;
Work::Work(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Work::Work(Work&&) noexcept = default;
Work& Work::operator=(Work&&) noexcept = default;
Work::~Work() = default;

absl::Status Work::Wait() {
  if (impl_ == nullptr || !impl_->work) return absl::OkStatus();
  std::exception_ptr error;
  try {
    impl_->group->WaitFor(*impl_->work, impl_->stream_ordered);
  } catch (...) {
    error = std::current_exception();
  }
  impl_->work.reset();
  if (error) return impl_->group->Failure(impl_->collective, error, impl_->start);
  if (impl_->divide_by != 1.0) impl_->tensors[0].div_(impl_->divide_by);
  impl_->tensors.clear();
  return absl::OkStatus();
}

namespace {

// Starts `issue` and wraps its c10d::Work; an exception while starting is returned as the failure Status.
absl::StatusOr<Work> Start(const std::shared_ptr<Group::Impl>& group, const char* collective,
                           std::vector<at::Tensor> tensors,
                           const std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&)>& issue,
                           double divide_by = 1.0) {
  auto impl = std::make_unique<Work::Impl>();
  impl->group = group;
  impl->collective = collective;
  impl->start = absl::Now();
  impl->tensors = std::move(tensors);
  impl->divide_by = divide_by;
  impl->stream_ordered = !impl->tensors.empty() && impl->tensors[0].is_cuda() && group->cuda_backend;
  try {
    impl->work = issue(impl->tensors);
  } catch (...) {
    return group->Failure(collective, std::current_exception(), impl->start);
  }
  return Work(std::move(impl));
}

}  // namespace

absl::StatusOr<Work> Group::ISend(const at::Tensor& tensor, int dst, int tag) {
  if (absl::Status s = impl_->CheckTensor("send", tensor); !s.ok()) return s;
  if (absl::Status s = impl_->CheckPeer("send", "dst", dst); !s.ok()) return s;
  if (dst == rank()) return absl::InvalidArgumentError(impl_->Prefix("send") + ": dst is this rank");
  return Start(impl_, "send", {tensor},
               [&](std::vector<at::Tensor>& t) { return impl_->ForP2P(tensor, rank(), dst)->send(t, dst, tag); });
}

absl::StatusOr<Work> Group::IRecv(at::Tensor& tensor, int src, int tag) {
  if (absl::Status s = impl_->CheckTensor("recv", tensor); !s.ok()) return s;
  if (absl::Status s = impl_->CheckPeer("recv", "src", src); !s.ok()) return s;
  if (src == rank()) return absl::InvalidArgumentError(impl_->Prefix("recv") + ": src is this rank");
  return Start(impl_, "recv", {tensor},
               [&](std::vector<at::Tensor>& t) { return impl_->ForP2P(tensor, src, rank())->recv(t, src, tag); });
}

absl::StatusOr<Work> Group::IAllReduce(at::Tensor& tensor, ReduceOp op) {
  if (absl::Status s = impl_->CheckTensor("all_reduce", tensor); !s.ok()) return s;
  c10d::AllreduceOptions opts;
  opts.timeout = ToChrono(impl_->timeout);
  opts.reduceOp = op == ReduceOp::kMax   ? c10d::ReduceOp::MAX
                  : op == ReduceOp::kMin ? c10d::ReduceOp::MIN
                                         : c10d::ReduceOp::SUM;  // Gloo has no AVG: sum, then divide
  return Start(impl_, "all_reduce", {tensor},
               [&](std::vector<at::Tensor>& t) { return impl_->For(tensor)->allreduce(t, opts); },
               op == ReduceOp::kAvg ? static_cast<double>(size()) : 1.0);
}

absl::Status Group::Barrier() {
  c10d::BarrierOptions opts;
  opts.timeout = ToChrono(impl_->timeout);
  return impl_->Run("barrier", at::Tensor(), [&] { return impl_->backend->barrier(opts); });
}

struct DistributedContext::Impl {
  LaunchEnv env;
  Backend backend = Backend::kGloo;
  absl::Duration timeout;
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<Group> world;
  int64_t groups_created = 0;  // same on every rank because NewGroup is called in the same order

  // A Gloo group of `ranks` over a store namespace `prefix`. Throws on failure (caller converts).
  c10::intrusive_ptr<c10d::Backend> MakeGloo(const std::string& prefix, int group_rank, int group_size) {
    auto options = c10d::ProcessGroupGloo::Options::create(ToChrono(timeout));
    options->devices.push_back(MakeGlooDevice(env.master_addr));
    auto group_store = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    return c10::make_intrusive<c10d::ProcessGroupGloo>(group_store, group_rank, group_size, options);
  }

  // Fills group->backend (Gloo) and, for kNccl, group->cuda_backend. Throws on failure (caller converts).
  void MakeBackends(const std::string& prefix, Group::Impl& group) {
    const int size = static_cast<int>(group.ranks.size());
    group.backend = MakeGloo(prefix, group.group_rank, size);
    if (backend == Backend::kNccl) {
      group.cuda_backend = MakeNcclBackend(c10::make_intrusive<c10d::PrefixStore>(prefix + "/nccl", store),
                                           group.group_rank, size, ToChrono(timeout));
      if (size > 1) {  // communicators are created lazily, on a pair's first message
        group.cuda_backend_down = MakeNcclBackend(
            c10::make_intrusive<c10d::PrefixStore>(prefix + "/nccl_down", store), group.group_rank, size,
            ToChrono(timeout));
      }
    }
  }
};

DistributedContext::DistributedContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DistributedContext::~DistributedContext() = default;
int DistributedContext::rank() const { return impl_->env.rank; }
int DistributedContext::world_size() const { return impl_->env.world_size; }
int DistributedContext::local_rank() const { return impl_->env.local_rank; }
absl::Duration DistributedContext::timeout() const { return impl_->timeout; }
Backend DistributedContext::backend() const { return impl_->backend; }
Group& DistributedContext::world() { return *impl_->world; }

absl::StatusOr<std::shared_ptr<Group>> DistributedContext::NewGroup(const std::vector<int>& ranks,
                                                                    const std::string& name) {
  const std::string label = GroupLabel(name, ranks);
  const std::string where = absl::StrCat("rank ", rank(), ": new_group ", label);
  if (ranks.empty()) return absl::InvalidArgumentError(where + ": ranks is empty");
  std::set<int> seen;
  for (int r : ranks) {
    if (r < 0 || r >= world_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ranks contains ", r, ", outside [0, ", world_size(), ")"));
    }
    if (!seen.insert(r).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ranks contains ", r, " twice"));
    }
  }
  const int64_t index = impl_->groups_created++;
  int group_rank = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] == rank()) group_rank = static_cast<int>(i);
  }
  if (group_rank < 0) return std::shared_ptr<Group>();

  auto group = std::make_shared<Group::Impl>();
  group->label = label;
  group->ranks = ranks;
  group->global_rank = rank();
  group->group_rank = group_rank;
  group->timeout = impl_->timeout;
  try {
    impl_->MakeBackends(absl::StrCat("group", index, "/", name), *group);
  } catch (...) {
    const std::string message = FirstLine(ExceptionMessage(std::current_exception()));
    return absl::UnavailableError(absl::StrCat(where, " failed within ", absl::FormatDuration(impl_->timeout),
                                               " (did every member call NewGroup in the same order?): ", message));
  }
  return std::make_shared<Group>(std::move(group));
}

absl::StatusOr<std::shared_ptr<DistributedContext>> InitDistributed(const LaunchEnv& env, Backend backend,
                                                                    absl::Duration timeout) {
  if (backend == Backend::kNccl && !NcclAvailable()) {
    return absl::UnimplementedError(
        "backend NCCL is not linked into this binary: build with --config=cuda and depend on "
        "//megatron/core/distributed:nccl (or use Backend::kGloo)");
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("timeout=", absl::FormatDuration(timeout), " must be positive"));
  }
  if (env.rank < 0 || env.rank >= env.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("env.rank=", env.rank, " is not in [0, env.world_size=", env.world_size, ")"));
  }
  const std::string where = absl::StrCat("rank ", env.rank, ": rendezvous at ", env.master_addr, ":", env.master_port);

  // Gloo writes to peer sockets without MSG_NOSIGNAL in places: when a peer dies, the default SIGPIPE action
  // would kill this rank too instead of letting the collective fail with an error (Python ignores SIGPIPE,
  // which is why torch.distributed does not hit this). Only the default action is replaced.
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);

  auto impl = std::make_unique<DistributedContext::Impl>();
  impl->env = env;
  impl->backend = backend;
  impl->timeout = timeout;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(env.master_port);
    options.isServer = env.rank == 0;
    options.numWorkers = env.world_size;
    options.waitWorkers = true;
    options.timeout = ToChrono(timeout);
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (...) {
    const std::string message = FirstLine(ExceptionMessage(std::current_exception()));
    return absl::DeadlineExceededError(absl::StrCat(where, " failed within ", absl::FormatDuration(timeout), " (",
                                                    env.rank == 0 ? "did every rank start?" : "is rank 0 up?",
                                                    "): ", message));
  }

  std::vector<int> all(env.world_size);
  for (int i = 0; i < env.world_size; ++i) all[i] = i;
  auto world = std::make_shared<Group::Impl>();
  world->label = env.world_size <= 16 ? GroupLabel("world", all) : absl::StrCat("world[0..", env.world_size - 1, "]");
  world->ranks = all;
  world->global_rank = env.rank;
  world->group_rank = env.rank;
  world->timeout = timeout;
  try {
    impl->MakeBackends("world", *world);
  } catch (...) {
    const std::string message = FirstLine(ExceptionMessage(std::current_exception()));
    return absl::UnavailableError(absl::StrCat(where, ": creating the world group failed: ", message));
  }
  impl->world = std::make_unique<Group>(std::move(world));
  // Nobody leaves until everyone has connected: rank 0 serves the store and must outlive the others' reads.
  if (absl::Status s = impl->world->Barrier(); !s.ok()) return s;
  return std::make_shared<DistributedContext>(std::move(impl));
}

}  // namespace megatron::distributed
