#include "megatron/core/distributed/launch_env.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace megatron::distributed {
namespace {

using GetEnv = std::function<const char*(const char*)>;

// A variable that is set and non-empty; an empty value counts as unset (as torchrun treats it).
const char* Get(const GetEnv& getenv, const char* name) {
  const char* value = getenv(name);
  return value != nullptr && value[0] != '\0' ? value : nullptr;
}

// Parses `name`'s integer value and checks it is >= min_value.
absl::StatusOr<int> ParseInt(const char* name, const char* value, int min_value) {
  int parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed)) {
    return absl::InvalidArgumentError(absl::StrCat(name, "='", value, "' is not an integer"));
  }
  if (parsed < min_value) {
    return absl::InvalidArgumentError(absl::StrCat(name, "=", parsed, " must be >= ", min_value));
  }
  return parsed;
}

// Optional integer variable: `fallback` when unset.
absl::StatusOr<int> IntOr(const GetEnv& getenv, const char* name, int fallback, int min_value) {
  const char* value = Get(getenv, name);
  if (value == nullptr) return fallback;
  return ParseInt(name, value, min_value);
}

absl::Status CheckBelow(const char* name, int value, const char* bound_name, int bound) {
  if (value >= bound) {
    return absl::InvalidArgumentError(absl::StrCat(name, "=", value, " is not below ", bound_name, "=", bound));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ParsePort(const char* value) {
  absl::StatusOr<int> port = ParseInt("MASTER_PORT", value, 1);
  if (!port.ok()) return port.status();
  if (*port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT=", *port, " is not a TCP port (1..65535)"));
  }
  return port;
}

// SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE look like "4" or "4(x2),3": the first count is ours
// only on homogeneous jobs, which is what data/model-parallel launches use.
absl::StatusOr<int> LeadingCount(const char* name, const char* value) {
  std::string text(value);
  size_t end = 0;
  while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
  int count = 0;
  if (end == 0 || !absl::SimpleAtoi(text.substr(0, end), &count) || count < 1) {
    return absl::InvalidArgumentError(absl::StrCat(name, "='", value, "' does not start with a task count"));
  }
  return count;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandSlurmNodeList(const std::string& nodelist) {
  std::vector<std::string> hosts;
  // Split on commas that are outside brackets.
  std::vector<std::string> items;
  int depth = 0;
  std::string current;
  for (char c : nodelist) {
    if (c == '[') {
      if (++depth > 1) {
        return absl::InvalidArgumentError(absl::StrCat("SLURM node list '", nodelist, "' has nested '['"));
      }
    } else if (c == ']') {
      if (--depth < 0) {
        return absl::InvalidArgumentError(absl::StrCat("SLURM node list '", nodelist, "' has an unmatched ']'"));
      }
    }
    if (c == ',' && depth == 0) {
      items.push_back(current);
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (depth != 0) {
    return absl::InvalidArgumentError(absl::StrCat("SLURM node list '", nodelist, "' has an unmatched '['"));
  }
  items.push_back(current);

  for (const std::string& item : items) {
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("SLURM node list '", nodelist, "' has an empty host name"));
    }
    const size_t open = item.find('[');
    if (open == std::string::npos) {
      hosts.push_back(item);
      continue;
    }
    const size_t close = item.find(']', open);
    const std::string prefix = item.substr(0, open);
    const std::string suffix = item.substr(close + 1);
    if (suffix.find('[') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("SLURM node list '", nodelist, "': only one bracket range per host is supported"));
    }
    for (absl::string_view part : absl::StrSplit(item.substr(open + 1, close - open - 1), ',')) {
      const std::string range(part);
      const size_t dash = range.find('-');
      const std::string lo_text = range.substr(0, dash);
      const std::string hi_text = dash == std::string::npos ? lo_text : range.substr(dash + 1);
      int lo = 0, hi = 0;
      if (lo_text.empty() || hi_text.empty() || !absl::SimpleAtoi(lo_text, &lo) || !absl::SimpleAtoi(hi_text, &hi) ||
          lo < 0 || hi < lo) {
        return absl::InvalidArgumentError(absl::StrCat("SLURM node list '", nodelist, "': bad range '", range, "'"));
      }
      if (hi - lo > 100000) {
        return absl::InvalidArgumentError(
            absl::StrCat("SLURM node list '", nodelist, "': range '", range, "' is too large"));
      }
      // "01-04" keeps the width of the lower bound, as SLURM does.
      const size_t width = lo_text.size();
      for (int i = lo; i <= hi; ++i) {
        std::string number = std::to_string(i);
        if (number.size() < width) number.insert(0, width - number.size(), '0');
        hosts.push_back(absl::StrCat(prefix, number, suffix));
      }
    }
  }
  return hosts;
}

absl::StatusOr<int> PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket(): ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("binding a free port on 127.0.0.1: ", std::strerror(err)));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

absl::StatusOr<LaunchEnv> LaunchEnv::FromEnvironment(const GetEnv& getenv) {
  LaunchEnv env;
  const bool torchrun = Get(getenv, "RANK") != nullptr || Get(getenv, "WORLD_SIZE") != nullptr;
  const bool slurm = !torchrun && Get(getenv, "SLURM_PROCID") != nullptr;

  if (torchrun) {
    env.source = Source::kTorchrun;
    // Both are required: a rank without a world size (or vice versa) is a launcher bug, not a default.
    for (const char* name : {"RANK", "WORLD_SIZE"}) {
      if (Get(getenv, name) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is not set but ", name[0] == 'R' ? "WORLD_SIZE" : "RANK", " is (torchrun sets both)"));
      }
    }
    absl::StatusOr<int> world = ParseInt("WORLD_SIZE", Get(getenv, "WORLD_SIZE"), 1);
    if (!world.ok()) return world.status();
    absl::StatusOr<int> rank = ParseInt("RANK", Get(getenv, "RANK"), 0);
    if (!rank.ok()) return rank.status();
    env.world_size = *world;
    env.rank = *rank;
    if (absl::Status s = CheckBelow("RANK", env.rank, "WORLD_SIZE", env.world_size); !s.ok()) return s;
    // Without LOCAL_* we assume one node: local == global.
    absl::StatusOr<int> local_world = IntOr(getenv, "LOCAL_WORLD_SIZE", env.world_size, 1);
    if (!local_world.ok()) return local_world.status();
    absl::StatusOr<int> local_rank = IntOr(getenv, "LOCAL_RANK", env.rank, 0);
    if (!local_rank.ok()) return local_rank.status();
    env.local_world_size = *local_world;
    env.local_rank = *local_rank;
    if (env.world_size > 1 && Get(getenv, "MASTER_ADDR") == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("MASTER_ADDR is not set (WORLD_SIZE=", env.world_size,
                                                     "); every rank must know where rank 0 is"));
    }
    if (env.world_size > 1 && Get(getenv, "MASTER_PORT") == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT is not set (WORLD_SIZE=", env.world_size, ")"));
    }
  } else if (slurm) {
    env.source = Source::kSlurm;
    const char* ntasks = Get(getenv, "SLURM_NTASKS");
    if (ntasks == nullptr) ntasks = Get(getenv, "SLURM_NPROCS");
    if (ntasks == nullptr) {
      return absl::InvalidArgumentError("SLURM_PROCID is set but SLURM_NTASKS is not");
    }
    absl::StatusOr<int> world = ParseInt("SLURM_NTASKS", ntasks, 1);
    if (!world.ok()) return world.status();
    absl::StatusOr<int> rank = ParseInt("SLURM_PROCID", Get(getenv, "SLURM_PROCID"), 0);
    if (!rank.ok()) return rank.status();
    env.world_size = *world;
    env.rank = *rank;
    if (absl::Status s = CheckBelow("SLURM_PROCID", env.rank, "SLURM_NTASKS", env.world_size); !s.ok()) {
      return s;
    }
    absl::StatusOr<int> local_rank = IntOr(getenv, "SLURM_LOCALID", 0, 0);
    if (!local_rank.ok()) return local_rank.status();
    env.local_rank = *local_rank;

    int local_world = env.world_size;
    if (const char* per_node = Get(getenv, "SLURM_NTASKS_PER_NODE")) {
      absl::StatusOr<int> n = LeadingCount("SLURM_NTASKS_PER_NODE", per_node);
      if (!n.ok()) return n.status();
      local_world = *n;
    } else if (const char* tasks_per_node = Get(getenv, "SLURM_TASKS_PER_NODE")) {
      absl::StatusOr<int> n = LeadingCount("SLURM_TASKS_PER_NODE", tasks_per_node);
      if (!n.ok()) return n.status();
      local_world = *n;
    } else if (Get(getenv, "SLURM_NNODES") != nullptr) {
      absl::StatusOr<int> nodes = ParseInt("SLURM_NNODES", Get(getenv, "SLURM_NNODES"), 1);
      if (!nodes.ok()) return nodes.status();
      local_world = (env.world_size + *nodes - 1) / *nodes;
    }
    env.local_world_size = local_world;

    const char* nodelist = Get(getenv, "SLURM_NODELIST");
    const char* nodelist_name = "SLURM_NODELIST";
    if (nodelist == nullptr) {
      nodelist = Get(getenv, "SLURM_JOB_NODELIST");
      nodelist_name = "SLURM_JOB_NODELIST";
    }
    if (const char* addr = Get(getenv, "MASTER_ADDR")) {
      env.master_addr = addr;
    } else if (nodelist != nullptr) {
      absl::StatusOr<std::vector<std::string>> hosts = ExpandSlurmNodeList(nodelist);
      if (!hosts.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(nodelist_name, ": ", hosts.status().message()));
      }
      env.master_addr = hosts->front();
    } else if (env.world_size > 1) {
      return absl::InvalidArgumentError(
          "neither MASTER_ADDR nor SLURM_NODELIST is set under SLURM; cannot find the master host");
    }
  }
  if (env.local_rank >= env.local_world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        env.source == Source::kSlurm ? "SLURM_LOCALID" : "LOCAL_RANK", "=", env.local_rank, " is not below ",
        env.source == Source::kSlurm ? "the tasks per node" : "LOCAL_WORLD_SIZE", "=", env.local_world_size));
  }

  // torchrun and the defaults take MASTER_ADDR as is (SLURM handled it above, before its node list).
  if (env.source != Source::kSlurm) {
    if (const char* addr = Get(getenv, "MASTER_ADDR")) env.master_addr = addr;
  }
  if (const char* port = Get(getenv, "MASTER_PORT")) {
    absl::StatusOr<int> parsed = ParsePort(port);
    if (!parsed.ok()) return parsed.status();
    env.master_port = *parsed;
  } else if (env.source == Source::kDefault) {
    // A lone process hosts its own store; a free port avoids clashing with other jobs on the machine.
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    env.master_port = *port;
  }
  return env;
}

std::string LaunchEnv::DebugString() const {
  const char* source_name = source == Source::kTorchrun ? "torchrun" : source == Source::kSlurm ? "SLURM" : "defaults";
  return absl::StrCat("rank ", rank, "/", world_size, " (local ", local_rank, "/", local_world_size, "), master ",
                      master_addr, ":", master_port, ", from ", source_name);
}

}  // namespace megatron::distributed
