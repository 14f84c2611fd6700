#include "megatron/core/utils/trace_profiler.h"

#include <kineto/ActivityType.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace megatron::utils {
namespace {

std::atomic<bool> g_running{false};

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string Shorten(const std::string& name, size_t width) {
  return name.size() <= width ? name : name.substr(0, width - 3) + "...";
}

}  // namespace

TraceProfiler::TraceProfiler(bool cuda, double start_seconds) : cuda_(cuda), start_seconds_(start_seconds) {}

absl::StatusOr<std::unique_ptr<TraceProfiler>> TraceProfiler::Start(bool cuda) {
  if (g_running.exchange(true)) {
    return absl::FailedPreconditionError("TraceProfiler: a profiler is already running in this process");
  }
  using torch::profiler::impl::ActivityType;
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda) activities.insert(ActivityType::CUDA);
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  try {
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  } catch (const std::exception& e) {
    g_running = false;
    return absl::InternalError(absl::StrCat("TraceProfiler: could not start the Kineto profiler: ", e.what()));
  }
  return std::unique_ptr<TraceProfiler>(new TraceProfiler(cuda, NowSeconds()));
}

TraceProfiler::~TraceProfiler() {
  if (!running_) return;
  try {
    torch::autograd::profiler::disableProfiler();
  } catch (...) {
  }
  g_running = false;
}

absl::StatusOr<std::string> TraceProfiler::Stop(const std::string& trace_path, int top) {
  if (!running_) return absl::FailedPreconditionError("TraceProfiler: already stopped");
  running_ = false;
  const double wall = NowSeconds() - start_seconds_;
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result;
  try {
    result = torch::autograd::profiler::disableProfiler();
  } catch (const std::exception& e) {
    g_running = false;
    return absl::InternalError(absl::StrCat("TraceProfiler: stopping the profiler failed: ", e.what()));
  }
  g_running = false;
  try {
    result->save(trace_path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(trace_path, ": writing the trace failed: ", e.what()));
  }
  struct Row {
    int64_t calls = 0;
    double ns = 0;
  };
  std::map<std::string, Row> rows;
  double total_ns = 0;
  const c10::DeviceType wanted = cuda_ ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  // Device rows: kernels, copies and memsets; GPU user annotations (e.g. "nccl:all_reduce", which spans the
  // NCCL kernel) would count that time twice.
  const auto annotation = static_cast<uint8_t>(libkineto::ActivityType::GPU_USER_ANNOTATION);
  for (const auto& e : result->events()) {
    if (e.deviceType() != wanted) continue;
    if (cuda_ && e.activityType() == annotation) continue;
    Row& row = rows[e.name()];
    ++row.calls;
    row.ns += static_cast<double>(e.durationNs());
    total_ns += static_cast<double>(e.durationNs());
  }
  std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::string out = absl::StrFormat("%s time by %s over %.3f s of wall time (trace: %s)\n",
                                    cuda_ ? "device" : "host", cuda_ ? "kernel" : "operator", wall, trace_path);
  absl::StrAppendFormat(&out, "%-90s %8s %11s %10s %7s\n", "name", "calls", "total ms", "mean us", "share");
  const int shown = std::min<int>(top, static_cast<int>(sorted.size()));
  for (int i = 0; i < shown; ++i) {
    const auto& [name, row] = sorted[i];
    absl::StrAppendFormat(&out, "%-90s %8d %11.3f %10.1f %6.1f%%\n", Shorten(name, 90), row.calls, row.ns / 1e6,
                          row.ns / 1e3 / static_cast<double>(row.calls), total_ns > 0 ? 100.0 * row.ns / total_ns : 0.0);
  }
  absl::StrAppendFormat(&out, "%d more; total %s time %.3f ms (%.1f%% of the wall time)\n",
                        static_cast<int>(sorted.size()) - shown, cuda_ ? "device" : "host", total_ns / 1e6,
                        wall > 0 ? 100.0 * total_ns / 1e9 / wall : 0.0);
  return out;
}

}  // namespace megatron::utils
