#include "megatron/core/pipeline_parallel/p2p_communication.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"

namespace megatron::pipeline_parallel {
namespace {

absl::Status Annotate(const absl::Status& s, const char* what, int peer, int tag) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("pipeline ", what, " (peer group rank ", peer, ", tag ", tag,
                                             "): ", s.message()));
}

}  // namespace

PipelineP2P::PipelineP2P(distributed::Group* pipeline_group) : group_(pipeline_group) {
  TORCH_CHECK(group_ != nullptr && group_->size() >= 2, "PipelineP2P: needs a pipeline group of at least 2 ranks");
}

PipelineP2P::~PipelineP2P() = default;

absl::Status PipelineP2P::Send(const at::Tensor& tensor, int dst, int tag) {
  TORCH_CHECK(tensor.defined() && tensor.dim() <= kMaxDims, "PipelineP2P::Send: tensor must be defined with at most ",
              kMaxDims, " dims, got ", tensor.defined() ? tensor.sizes() : at::IntArrayRef{});
  at::Tensor data = tensor.detach().contiguous();
  at::Tensor header = at::zeros({2 + kMaxDims}, at::TensorOptions().dtype(at::kLong));
  int64_t* h = header.data_ptr<int64_t>();
  h[0] = data.dim();
  h[1] = static_cast<int64_t>(data.scalar_type());
  for (int64_t d = 0; d < data.dim(); ++d) h[2 + d] = data.size(d);
  absl::StatusOr<distributed::Work> header_work = group_->ISend(header, dst, 2 * tag);
  if (!header_work.ok()) return Annotate(header_work.status(), "send header", dst, tag);
  absl::StatusOr<distributed::Work> data_work = group_->ISend(data, dst, 2 * tag + 1);
  if (!data_work.ok()) return Annotate(data_work.status(), "send", dst, tag);
  pending_.push_back(Pending{std::move(*header_work), std::move(*data_work)});
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> PipelineP2P::Recv(int src, int tag) {
  at::Tensor header = at::zeros({2 + kMaxDims}, at::TensorOptions().dtype(at::kLong));
  {
    absl::StatusOr<distributed::Work> w = group_->IRecv(header, src, 2 * tag);
    if (!w.ok()) return Annotate(w.status(), "recv header", src, tag);
    if (absl::Status s = w->Wait(); !s.ok()) return Annotate(s, "recv header", src, tag);
  }
  const int64_t* h = header.data_ptr<int64_t>();
  if (h[0] < 0 || h[0] > kMaxDims) {
    return absl::DataLossError(absl::StrCat("pipeline recv (peer group rank ", src, ", tag ", tag,
                                            "): corrupt header with ", h[0], " dims"));
  }
  std::vector<int64_t> sizes(h + 2, h + 2 + h[0]);
  at::Tensor data = at::empty(sizes, at::TensorOptions().dtype(static_cast<at::ScalarType>(h[1])));
  absl::StatusOr<distributed::Work> w = group_->IRecv(data, src, 2 * tag + 1);
  if (!w.ok()) return Annotate(w.status(), "recv", src, tag);
  if (absl::Status s = w->Wait(); !s.ok()) return Annotate(s, "recv", src, tag);
  return data;
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
