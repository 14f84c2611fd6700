#include "megatron/core/training/tensorboard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "megatron/core/proto/tensorboard.pb.h"
#include "megatron/core/utils/crc32c.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::training {
namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

void AppendLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

std::string TensorBoardWriter::FrameRecord(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  AppendLe(&out, payload.size(), 8);
  AppendLe(&out, utils::MaskCrc(utils::Crc32c(out.data(), 8)), 4);
  out.append(payload.data(), payload.size());
  AppendLe(&out, utils::MaskCrc(utils::Crc32c(payload)), 4);
  return out;
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string& logdir) {
  if (absl::Status s = utils::MakeDirectories(logdir); !s.ok()) return s;
  const std::string base = absl::StrCat(logdir, "/events.out.tfevents.",
                                        static_cast<int64_t>(std::time(nullptr)), ".", HostName());
  std::string path = base;
  int fd = -1;
  // O_EXCL: never append to (or truncate) another writer's file.
  for (int attempt = 1;; ++attempt) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) break;
    if (errno == EINTR) continue;
    if (errno != EEXIST || attempt > 1000)
      return utils::ErrnoToStatus(errno, "cannot create event file", path);
    path = absl::StrCat(base, ".", attempt);
  }
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(std::move(path), fd));
  proto::Event event;
  event.set_wall_time(NowSeconds());
  event.set_file_version("brain.Event:2");
  {
    std::lock_guard<std::mutex> lock(writer->mu_);
    writer->AppendEvent(event.SerializeAsString());
    if (absl::Status s = writer->FlushLocked(); !s.ok()) return s;
  }
  return writer;
}

TensorBoardWriter::~TensorBoardWriter() { Close().IgnoreError(); }

void TensorBoardWriter::AddScalar(std::string_view tag, double value, int64_t step) {
  AddScalar(tag, value, step, NowSeconds());
}

void TensorBoardWriter::AddScalar(std::string_view tag, double value, int64_t step, double wall_time) {
  proto::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  proto::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(std::string(tag));
  v->set_simple_value(static_cast<float>(value));
  const std::string serialized = event.SerializeAsString();  // outside the lock: the costly part
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return;
  AppendEvent(serialized);
  if (buffer_.size() >= kAutoFlushBytes) {
    if (absl::Status s = FlushLocked(); !s.ok() && sticky_error_.ok()) sticky_error_ = s;
  }
}

void TensorBoardWriter::AppendEvent(const std::string& serialized_event) {
  buffer_ += FrameRecord(serialized_event);
}

absl::Status TensorBoardWriter::FlushLocked() {
  if (fd_ < 0 || buffer_.empty()) return absl::OkStatus();
  absl::Status s = utils::WriteFully(fd_, buffer_, path_);
  // Dropped even on error: retrying after a partial write would duplicate records mid-file.
  buffer_.clear();
  return s;
}

absl::Status TensorBoardWriter::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = FlushLocked();
  if (!sticky_error_.ok()) s = std::exchange(sticky_error_, absl::OkStatus());
  return s;
}

absl::Status TensorBoardWriter::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return absl::OkStatus();
  absl::Status s = FlushLocked();
  if (!sticky_error_.ok()) s = std::exchange(sticky_error_, absl::OkStatus());
  if (::fsync(fd_) != 0 && s.ok()) s = utils::ErrnoToStatus(errno, "fsync", path_);
  if (::close(fd_) != 0 && s.ok()) s = utils::ErrnoToStatus(errno, "close", path_);
  fd_ = -1;
  return s;
}

}  // namespace megatron::training
