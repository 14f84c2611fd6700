// LaunchEnv: who am I in a multi-process job, read from the launcher's environment variables.
//
// Sources, in order of precedence:
//   1. torchrun / torch.distributed.launch (and our SpawnLocal): RANK, WORLD_SIZE, LOCAL_RANK,
//      LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Used as soon as RANK or WORLD_SIZE is set.
//   2. SLURM (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE / SLURM_NNODES,
//      SLURM_NODELIST (or SLURM_JOB_NODELIST); the first host of the (possibly compressed, e.g.
//      `node[01-04,07]`) node list is the master. MASTER_ADDR / MASTER_PORT, when set, override.
//   3. Nothing set: a single process, rank 0 of 1, master 127.0.0.1 on a free port (bound on port 0).
//
// Every value is validated ("RANK=5 is not below WORLD_SIZE=4"), so a misconfigured launch fails at once
// with the variable's name instead of hanging in rendezvous. No libtorch dependency.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::distributed {

// The default master port when a launcher gives none (torchrun's default).
inline constexpr int kDefaultMasterPort = 29500;

struct LaunchEnv {
  enum class Source { kDefault, kTorchrun, kSlurm };

  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = kDefaultMasterPort;
  Source source = Source::kDefault;

  // Reads the environment through `getenv` (injectable for tests). Errors are InvalidArgument and name
  // the offending variable and its value.
  static absl::StatusOr<LaunchEnv> FromEnvironment(const std::function<const char*(const char*)>& getenv = ::getenv);

  // "rank 1/4 (local 1/4), master 127.0.0.1:29500, from torchrun".
  std::string DebugString() const;
};

// Expands a SLURM host list: "node[01-04,07],gpu3" -> {node01, node02, node03, node04, node07, gpu3}.
// Zero padding of range bounds is kept; nested brackets are not used by SLURM and are rejected.
absl::StatusOr<std::vector<std::string>> ExpandSlurmNodeList(const std::string& nodelist);

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close). Another
// process may take it before we bind it again; acceptable for single-node launches and tests.
absl::StatusOr<int> PickFreePort();

}  // namespace megatron::distributed
