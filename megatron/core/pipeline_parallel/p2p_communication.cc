#include "megatron/core/pipeline_parallel/p2p_communication.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"

namespace megatron::pipeline_parallel {
namespace {

// Header: [ndim, dtype, is_cuda, tag, sizes...].
constexpr int kHeaderFixed = 4;
// Channel tags: every header of a (peer, direction) pair on one tag and every payload on another, so both
// arrive in the order they were sent (Gloo matches by (peer, tag) in FIFO order; NCCL ignores tags).
constexpr int kHeaderChannel = 0;
constexpr int kDataChannel = 1;

absl::Status Annotate(const absl::Status& s, const char* what, int peer, int tag) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("pipeline ", what, " (peer group rank ", peer, ", tag ", tag,
                                             "): ", s.message()));
}

}  // namespace

PipelineP2P::PipelineP2P(distributed::Group* pipeline_group) : group_(pipeline_group) {
  TORCH_CHECK(group_ != nullptr && group_->size() >= 2, "PipelineP2P: needs a pipeline group of at least 2 ranks");
  cuda_linked_.assign(group_->size(), false);
}

absl::Status PipelineP2P::LinkCuda(int peer, const at::Device& device) {
  if (cuda_linked_[peer]) return absl::OkStatus();
  const at::TensorOptions options = at::TensorOptions().dtype(at::kFloat).device(device);
  const bool lower = rank() < peer;
  for (bool up : {true, false}) {  // lower -> higher first, on both ranks
    at::Tensor token = at::zeros({1}, options);
    absl::StatusOr<distributed::Work> w =
        up == lower ? group_->ISend(token, peer, kDataChannel) : group_->IRecv(token, peer, kDataChannel);
    if (!w.ok()) return Annotate(w.status(), "link", peer, -1);
    if (absl::Status s = w->Wait(); !s.ok()) return Annotate(s, "link", peer, -1);
  }
  cuda_linked_[peer] = true;
  return absl::OkStatus();
}

PipelineP2P::~PipelineP2P() = default;


absl::Status PipelineP2P::Send(const at::Tensor& tensor, int dst, int tag) {
  TORCH_CHECK(tensor.defined() && tensor.dim() <= kMaxDims, "PipelineP2P::Send: tensor must be defined with at most ",
              kMaxDims, " dims, got ", tensor.defined() ? tensor.sizes() : at::IntArrayRef{});
  at::Tensor data = tensor.detach().contiguous();
  at::Tensor header = at::zeros({kHeaderFixed + kMaxDims}, at::TensorOptions().dtype(at::kLong));
  int64_t* h = header.data_ptr<int64_t>();
  h[0] = data.dim();
  h[1] = static_cast<int64_t>(data.scalar_type());
  h[2] = data.is_cuda() ? 1 : 0;
  h[3] = tag;
  for (int64_t d = 0; d < data.dim(); ++d) h[kHeaderFixed + d] = data.size(d);
  absl::StatusOr<distributed::Work> header_work = group_->ISend(header, dst, kHeaderChannel);
  if (!header_work.ok()) return Annotate(header_work.status(), "send header", dst, tag);
  if (data.is_cuda()) {
    if (absl::Status s = LinkCuda(dst, data.device()); !s.ok()) return s;
  }
  absl::StatusOr<distributed::Work> data_work = group_->ISend(data, dst, kDataChannel);
  if (!data_work.ok()) return Annotate(data_work.status(), "send", dst, tag);
  pending_.push_back(Pending{std::move(*header_work), std::move(*data_work)});
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> PipelineP2P::Recv(int src, int tag) {
  if (auto it = stash_.find({src, tag}); it != stash_.end()) {
    at::Tensor data = std::move(it->second);
    stash_.erase(it);
    return data;
  }
  while (true) {  // receive in arrival order until the message with `tag` comes (the others are stashed)
    at::Tensor header = at::zeros({kHeaderFixed + kMaxDims}, at::TensorOptions().dtype(at::kLong));
    {
      absl::StatusOr<distributed::Work> w = group_->IRecv(header, src, kHeaderChannel);
      if (!w.ok()) return Annotate(w.status(), "recv header", src, tag);
      if (absl::Status s = w->Wait(); !s.ok()) return Annotate(s, "recv header", src, tag);
    }
    const int64_t* h = header.data_ptr<int64_t>();
    if (h[0] < 0 || h[0] > kMaxDims || (h[2] != 0 && h[2] != 1)) {
      return absl::DataLossError(absl::StrCat("pipeline recv (peer group rank ", src, ", tag ", tag,
                                              "): corrupt header (", h[0], " dims, device flag ", h[2], ")"));
    }
    const int got_tag = static_cast<int>(h[3]);
    if (got_tag != tag && stash_.count({src, got_tag}) != 0) {
      return absl::DataLossError(absl::StrCat("pipeline recv (peer group rank ", src, ", tag ", tag,
                                              "): a second message with tag ", got_tag, " arrived"));
    }
    std::vector<int64_t> sizes(h + kHeaderFixed, h + kHeaderFixed + h[0]);
    at::TensorOptions options = at::TensorOptions().dtype(static_cast<at::ScalarType>(h[1]));
    if (h[2] == 1) options = options.device(at::kCUDA);  // this rank's current CUDA device
    at::Tensor data = at::empty(sizes, options);
    if (data.is_cuda()) {
      if (absl::Status s = LinkCuda(src, data.device()); !s.ok()) return s;
    }
    absl::StatusOr<distributed::Work> w = group_->IRecv(data, src, kDataChannel);
    if (!w.ok()) return Annotate(w.status(), "recv", src, got_tag);
    if (absl::Status s = w->Wait(); !s.ok()) return Annotate(s, "recv", src, got_tag);
    if (got_tag == tag) return data;
    stash_[{src, got_tag}] = std::move(data);
  }
}

absl::Status PipelineP2P::WaitSends() {
  absl::Status first;
  for (Pending& p : pending_) {
    absl::Status a = p.header.Wait();
    absl::Status b = p.data.Wait();
    if (first.ok()) first = !a.ok() ? a : b;
  }
  pending_.clear();
  return first;
}

}  // namespace megatron::pipeline_parallel
