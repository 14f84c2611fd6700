#include "megatron/core/distributed/data_parallel.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "absl/strings/str_cat.h"

namespace megatron::distributed {
namespace {

// Runs after autograd has accumulated a gradient into a parameter's .grad (our buffer view).
class AccumulatedHook : public torch::autograd::PostAccumulateGradHook {
 public:
  AccumulatedHook(DataParallelGrads* owner, int entry) : owner_(owner), entry_(entry) {}
  void operator()(const torch::autograd::Variable& /*tensor*/) override { owner_->OnGradAccumulated(entry_); }

 private:
  DataParallelGrads* owner_;
  int entry_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DataParallelGrads>> DataParallelGrads::Create(
    const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, Group* dp_group,
    const DataParallelOptions& options) {
  if (named_parameters.empty()) return absl::InvalidArgumentError("DataParallelGrads: no parameters");
  if (dp_group == nullptr) return absl::InvalidArgumentError("DataParallelGrads: no data-parallel group");
  if (options.bucket_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("DataParallelGrads: bucket_size ", options.bucket_size,
                                                   " must be positive"));
  }
  const at::Tensor& first = named_parameters.front().second;
  std::unique_ptr<DataParallelGrads> d(new DataParallelGrads());
  d->group_ = dp_group;
  // Reverse model order: the first bucket holds the last parameters, whose gradients backward produces first.
  int64_t offset = 0;
  for (auto it = named_parameters.rbegin(); it != named_parameters.rend(); ++it) {
    const at::Tensor& p = it->second;
    if (p.scalar_type() != first.scalar_type() || p.device() != first.device()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "DataParallelGrads: parameter ", it->first, " is ", c10::toString(p.scalar_type()), " on ",
          p.device().str(), ", but ", named_parameters.front().first, " is ", c10::toString(first.scalar_type()),
          " on ", first.device().str(), "; one dtype and device are supported"));
    }
    d->entries_.push_back(Entry{it->first, p, offset, p.numel()});
    offset += p.numel();
  }
  d->numel_ = offset;
  const int64_t dp = dp_group->size();
  const int64_t padded = (offset + dp - 1) / dp * dp;
  d->buffer_ = at::zeros({padded}, first.options().requires_grad(false));
  // Buckets at parameter boundaries, each at least bucket_size elements (except the last).
  Bucket current;
  for (size_t i = 0; i < d->entries_.size(); ++i) {
    const Entry& e = d->entries_[i];
    if (current.num_entries == 0) current.begin = e.offset;
    current.end = e.offset + e.numel;
    ++current.num_entries;
    d->bucket_of_.push_back(static_cast<int>(d->buckets_.size()));
    if (current.end - current.begin >= options.bucket_size || i + 1 == d->entries_.size()) {
      if (i + 1 == d->entries_.size()) current.end = padded;
      d->buckets_.push_back(std::move(current));
      current = Bucket();
    }
  }
  d->counts_.assign(d->entries_.size(), 0);
  for (size_t i = 0; i < d->entries_.size(); ++i) {
    torch::autograd::impl::set_post_acc_grad_hooks(d->entries_[i].param,
                                                   std::make_unique<AccumulatedHook>(d.get(), static_cast<int>(i)));
  }
  return d;
}

DataParallelGrads::~DataParallelGrads() {
  for (Entry& e : entries_) torch::autograd::impl::set_post_acc_grad_hooks(e.param, nullptr);
}

void DataParallelGrads::StartIteration(int num_microbatches) {
  TORCH_CHECK(num_microbatches >= 1, "DataParallelGrads::StartIteration: num_microbatches must be >= 1, got ",
              num_microbatches);
  at::NoGradGuard no_grad;
  buffer_.zero_();
  for (Entry& e : entries_) {
    e.param.mutable_grad() = buffer_.slice(0, e.offset, e.offset + e.numel).view(e.param.sizes());
  }
  std::fill(counts_.begin(), counts_.end(), 0);
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.started = false;
    b.work = Work();
  }
  expected_ = num_microbatches;
  next_bucket_ = 0;
  started_in_backward_ = 0;
  error_ = absl::OkStatus();
  armed_ = true;
}

void DataParallelGrads::OnGradAccumulated(int entry) {
  if (!armed_) return;  // a backward outside StartIteration/FinishIteration (e.g. a test's own)
  if (++counts_[entry] != expected_) return;
  Bucket& b = buckets_[bucket_of_[entry]];
  ++b.ready;
  StartReadyBuckets(/*from_hook=*/true);
}

void DataParallelGrads::StartReadyBuckets(bool from_hook) {
  while (next_bucket_ < num_buckets()) {
    Bucket& b = buckets_[next_bucket_];
    if (from_hook && b.ready < b.num_entries) return;
    at::Tensor slice = buffer_.slice(0, b.begin, b.end);
    absl::StatusOr<Work> work = group_->IAllReduce(slice, ReduceOp::kSum);
    if (!work.ok()) {
      if (error_.ok()) error_ = work.status();
    } else {
      b.work = std::move(*work);
    }
    b.started = true;
    if (from_hook) ++started_in_backward_;
    ++next_bucket_;
  }
}

absl::Status DataParallelGrads::FinishIteration() {
  TORCH_CHECK(armed_, "DataParallelGrads::FinishIteration without StartIteration");
  StartReadyBuckets(/*from_hook=*/false);
  armed_ = false;
  absl::Status status = error_;
  for (Bucket& b : buckets_) {
    absl::Status s = b.work.Wait();
    if (status.ok()) status = s;
  }
  if (!status.ok()) return status;
  at::NoGradGuard no_grad;
  buffer_.div_(static_cast<double>(group_->size()));
  return absl::OkStatus();
}

}  // namespace megatron::distributed
