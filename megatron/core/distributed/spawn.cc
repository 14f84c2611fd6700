#include "megatron/core/distributed/spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "megatron/core/distributed/launch_env.h"

extern char** environ;

namespace megatron::distributed {
namespace {

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int out_fd = -1;      // read end of the child's merged stdout/stderr; -1 after EOF
  std::string partial;  // an incomplete last line
  bool running = true;
  bool stopped_by_us = false;
  int wait_status = 0;
};

std::string DescribeExit(int rank, int status) {
  if (WIFEXITED(status)) return absl::StrCat("rank ", rank, " exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::StrCat("rank ", rank, " was killed by signal ", sig, " (", strsignal(sig), ")");
  }
  return absl::StrCat("rank ", rank, " ended with wait status ", status);
}

bool Failed(int status) { return !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }

// The rank variables, as "NAME=value" strings (built before fork: the child only calls async-signal-safe
// functions and exec, or runs the caller's function).
std::vector<std::pair<std::string, std::string>> RankVariables(int rank, int nproc, const SpawnOptions& options,
                                                               int port) {
  std::vector<std::pair<std::string, std::string>> vars = {
      {"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(nproc)},
      {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", options.master_addr}, {"MASTER_PORT", std::to_string(port)},
  };
  for (const auto& kv : options.env) vars.push_back(kv);
  return vars;
}

void Emit(const SpawnOptions& options, const std::string& line) {
  if (options.output) {
    options.output(line);
  } else {
    std::string with_newline = line + "\n";
    std::fwrite(with_newline.data(), 1, with_newline.size(), stdout);
    std::fflush(stdout);
  }
}

// Reads what is available from `child`; emits complete lines. Returns false at EOF.
bool Drain(Child& child, const SpawnOptions& options) {
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(child.out_fd, buffer, sizeof(buffer));
    if (n > 0) {
      child.partial.append(buffer, static_cast<size_t>(n));
      size_t newline;
      while ((newline = child.partial.find('\n')) != std::string::npos) {
        Emit(options, absl::StrCat("[rank ", child.rank, "] ", child.partial.substr(0, newline)));
        child.partial.erase(0, newline + 1);
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    // EOF (or an error, treated alike): flush a last line without newline.
    if (!child.partial.empty()) {
      Emit(options, absl::StrCat("[rank ", child.rank, "] ", child.partial));
      child.partial.clear();
    }
    ::close(child.out_fd);
    child.out_fd = -1;
    return false;
  }
}

void Reap(std::vector<Child>& children, bool block) {
  for (Child& child : children) {
    if (!child.running) continue;
    int status = 0;
    const pid_t r = ::waitpid(child.pid, &status, block ? 0 : WNOHANG);
    if (r == child.pid) {
      child.running = false;
      child.wait_status = status;
    }
  }
}

// Polls output for up to `ms` milliseconds.
void PollOutput(std::vector<Child>& children, const SpawnOptions& options, int ms) {
  std::vector<pollfd> fds;
  std::vector<Child*> owners;
  for (Child& child : children) {
    if (child.out_fd >= 0) {
      fds.push_back({child.out_fd, POLLIN, 0});
      owners.push_back(&child);
    }
  }
  if (fds.empty()) {
    ::usleep(static_cast<useconds_t>(ms) * 1000);
    return;
  }
  if (::poll(fds.data(), fds.size(), ms) <= 0) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].revents != 0) Drain(*owners[i], options);
  }
}

// SIGTERM to every running child's process group, then SIGKILL after the grace period.
void StopAll(std::vector<Child>& children, const SpawnOptions& options) {
  for (Child& child : children) {
    if (child.running) {
      child.stopped_by_us = true;
      ::kill(-child.pid, SIGTERM);
    }
  }
  const absl::Time deadline = absl::Now() + options.kill_grace;
  while (absl::Now() < deadline) {
    Reap(children, false);
    bool any = false;
    for (const Child& child : children) any |= child.running;
    if (!any) return;
    PollOutput(children, options, 20);
  }
  for (Child& child : children) {
    if (child.running) ::kill(-child.pid, SIGKILL);
  }
  Reap(children, true);
}

absl::Status Supervise(std::vector<Child>& children, const SpawnOptions& options) {
  const absl::Time deadline =
      options.timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + options.timeout;
  std::vector<std::string> failures;
  bool timed_out = false;
  while (true) {
    PollOutput(children, options, 20);
    Reap(children, false);
    bool any_running = false;
    bool new_failure = false;
    for (Child& child : children) {
      if (child.running) {
        any_running = true;
      } else if (!child.stopped_by_us && Failed(child.wait_status)) {
        const std::string what = DescribeExit(child.rank, child.wait_status);
        if (std::find(failures.begin(), failures.end(), what) == failures.end()) {
          failures.push_back(what);
          new_failure = true;
        }
      }
    }
    if (new_failure && options.stop_all_on_failure && any_running) {
      StopAll(children, options);
      break;
    }
    if (!any_running) break;
    if (absl::Now() >= deadline) {
      timed_out = true;
      StopAll(children, options);
      break;
    }
  }
  // Whatever the children printed last (e.g. the error that made them exit).
  for (Child& child : children) {
    while (child.out_fd >= 0 && Drain(child, options)) {
      pollfd fd{child.out_fd, POLLIN, 0};
      if (::poll(&fd, 1, 200) <= 0) {  // a grandchild may still hold the pipe; do not wait for it
        ::close(child.out_fd);
        child.out_fd = -1;
      }
    }
  }
  std::vector<int> stopped;
  for (const Child& child : children) {
    // A rank that finished cleanly while being stopped was not really stopped.
    if (child.stopped_by_us && Failed(child.wait_status)) stopped.push_back(child.rank);
  }
  const std::string stopped_note =
      stopped.empty() ? "" : absl::StrCat(" (stopped rank(s) ", absl::StrJoin(stopped, ","), ")");
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("ranks still running after ", absl::FormatDuration(options.timeout),
                                                    stopped_note,
                                                    failures.empty() ? "" : "; " + absl::StrJoin(failures, "; ")));
  }
  if (!failures.empty()) return absl::AbortedError(absl::StrCat(absl::StrJoin(failures, "; "), stopped_note));
  return absl::OkStatus();
}

absl::Status Launch(
    int nproc, const SpawnOptions& options,
    const std::function<void(int rank, const std::vector<std::pair<std::string, std::string>>& vars)>& run_child) {
  if (nproc < 1) return absl::InvalidArgumentError(absl::StrCat("nproc=", nproc, " must be >= 1"));
  int port = options.master_port;
  if (port == 0) {
    absl::StatusOr<int> free_port = PickFreePort();
    if (!free_port.ok()) return free_port.status();
    port = *free_port;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<Child> children;
  for (int rank = 0; rank < nproc; ++rank) {
    const auto vars = RankVariables(rank, nproc, options, port);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      const std::string error = std::strerror(errno);
      StopAll(children, options);
      return absl::InternalError(absl::StrCat("pipe() for rank ", rank, ": ", error));
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      const std::string error = std::strerror(errno);
      ::close(fds[0]);
      ::close(fds[1]);
      StopAll(children, options);
      return absl::InternalError(absl::StrCat("fork() for rank ", rank, ": ", error));
    }
    if (pid == 0) {
      ::setpgid(0, 0);
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      // Our own earlier children's pipes are O_CLOEXEC but this child may not exec; close them anyway.
      for (const Child& sibling : children) ::close(sibling.out_fd);
      ::close(fds[0]);
      ::close(fds[1]);
      run_child(rank, vars);
      ::_exit(127);  // run_child does not return
    }
    ::setpgid(pid, pid);  // also from the parent, so that kill(-pid) works even before the child runs
    ::close(fds[1]);
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    Child child;
    child.rank = rank;
    child.pid = pid;
    child.out_fd = fds[0];
    children.push_back(std::move(child));
  }
  return Supervise(children, options);
}

}  // namespace

absl::Status SpawnLocal(int nproc, const std::vector<std::string>& argv, absl::Duration timeout) {
  SpawnOptions options;
  options.timeout = timeout;
  return SpawnLocal(nproc, argv, options);
}

absl::Status SpawnLocal(int nproc, const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("argv is empty; nothing to run");
  if (nproc < 1) return absl::InvalidArgumentError(absl::StrCat("nproc=", nproc, " must be >= 1"));
  SpawnOptions resolved = options;
  if (resolved.master_port == 0) {
    absl::StatusOr<int> free_port = PickFreePort();
    if (!free_port.ok()) return free_port.status();
    resolved.master_port = *free_port;
  }
  // Every child's argv and environment (ours minus the variables we set, plus the rank variables) are built
  // here, before fork: after fork the child only calls exec, which is safe even if this process has threads.
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (std::string& s : args) c_argv.push_back(s.data());
  c_argv.push_back(nullptr);
  std::vector<std::vector<std::string>> env_strings(nproc);
  std::vector<std::vector<char*>> envps(nproc);
  for (int rank = 0; rank < nproc; ++rank) {
    const auto vars = RankVariables(rank, nproc, resolved, resolved.master_port);
    std::map<std::string, bool> overridden;
    for (const auto& kv : vars) overridden[kv.first] = true;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry(*e);
      if (overridden.count(entry.substr(0, entry.find('='))) == 0) env_strings[rank].push_back(entry);
    }
    for (const auto& kv : vars) env_strings[rank].push_back(kv.first + "=" + kv.second);
    for (std::string& s : env_strings[rank]) envps[rank].push_back(s.data());
    envps[rank].push_back(nullptr);
  }
  const std::string exec_failed = absl::StrCat("cannot execute '", argv[0], "'\n");
  return Launch(nproc, resolved, [&](int rank, const std::vector<std::pair<std::string, std::string>>&) {
    ::execvpe(c_argv[0], c_argv.data(), envps[rank].data());
    (void)!::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    ::_exit(127);
  });
}

absl::Status ForkAndSupervise(int nproc, const std::function<int(int rank)>& child_main, const SpawnOptions& options) {
  return Launch(nproc, options, [&](int rank, const std::vector<std::pair<std::string, std::string>>& vars) {
    for (const auto& kv : vars) ::setenv(kv.first.c_str(), kv.second.c_str(), 1);
    int code = 1;
    try {
      code = child_main(rank);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "uncaught exception: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "uncaught exception\n");
    }
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(code);
  });
}

}  // namespace megatron::distributed
