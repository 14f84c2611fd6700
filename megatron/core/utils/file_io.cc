#include "megatron/core/utils/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace megatron::utils {
namespace {

// Closes `fd` on scope exit; keeps the error paths below short.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  // Closes now and reports close(2)'s errno (0 on success); NFS can report write errors only at close.
  int Close() {
    if (fd_ < 0) return 0;
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::Status ErrnoToStatus(int err, const std::string& what, const std::string& path) {
  const std::string msg = absl::StrCat(what, " '", path, "': ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case ENOTDIR:
    case EISDIR:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status WriteFully(int fd, std::string_view data, const std::string& path) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write", path);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string DirName(const std::string& path) {
  // Trailing slashes name the same entry ("a/b/" is "a/b"), so they do not count as separators.
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  const size_t slash = path.find_last_of('/', end - 1);
  if (slash == std::string::npos) return ".";
  size_t dir_end = slash;
  while (dir_end > 0 && path[dir_end - 1] == '/') --dir_end;
  if (dir_end == 0) return "/";
  return path.substr(0, dir_end);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open", path);
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, "cannot stat", path);
  if (S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat("'", path, "' is a directory"));
  std::string out;
  // st_size is a hint (0 for /proc files, pipes); keep reading until EOF either way.
  if (st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status FsyncDirectory(const std::string& dir) {
  int fd;
  do {
    fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open directory", dir);
  FdCloser closer(fd);
  // Some filesystems (e.g. certain FUSE/network mounts) reject fsync on directories; there is nothing
  // more we can do there, so EINVAL is not an error.
  if (::fsync(fd) != 0 && errno != EINVAL) return ErrnoToStatus(errno, "fsync directory", dir);
  return absl::OkStatus();
}

absl::Status RenameAtomically(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("rename '", from, "' to"), to);
  }
  const std::string to_dir = DirName(to);
  if (absl::Status s = FsyncDirectory(to_dir); !s.ok()) return s;
  const std::string from_dir = DirName(from);
  if (from_dir != to_dir) return FsyncDirectory(from_dir);
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  return WriteFileAtomically(path, std::vector<std::string_view>{contents});
}

absl::Status WriteFileAtomically(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  int fd;
  do {
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoToStatus(errno, "cannot create", tmp);
  FdCloser closer(fd);
  absl::Status status;
  for (std::string_view piece : pieces) {
    status = WriteFully(fd, piece, tmp);
    if (!status.ok()) break;
  }
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoToStatus(errno, "fsync", tmp);
  if (status.ok()) {
    if (const int err = closer.Close(); err != 0) status = ErrnoToStatus(err, "close", tmp);
  }
  if (status.ok()) status = RenameAtomically(tmp, path);
  if (!status.ok()) {
    closer.Close();
    ::unlink(tmp.c_str());  // best effort; the original error is what matters
  }
  return status;
}

absl::Status MakeDirectories(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("MakeDirectories: empty path");
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("'", dir, "' exists and is not a directory"));
  }
  const std::string parent = DirName(dir);
  if (parent != dir && parent != "." && parent != "/") {
    if (absl::Status s = MakeDirectories(parent); !s.ok()) return s;
  }
  // EEXIST: another process created it between our stat and mkdir, which is fine if it is a directory.
  if (::mkdir(dir.c_str(), 0755) != 0 && !(errno == EEXIST && IsDirectory(dir))) {
    return ErrnoToStatus(errno, "mkdir", dir);
  }
  return absl::OkStatus();
}

absl::Status MakeParentDirectories(const std::string& path) {
  const std::string parent = DirName(path);
  if (parent == "." || parent == "/") return absl::OkStatus();
  return MakeDirectories(parent);
}

}  // namespace megatron::utils
