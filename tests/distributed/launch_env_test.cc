#include "megatron/core/distributed/launch_env.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace megatron::distributed {
namespace {

using Env = std::map<std::string, std::string>;

absl::StatusOr<LaunchEnv> FromMap(const Env& env) {
  return LaunchEnv::FromEnvironment([&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

void ExpectError(const Env& env, const std::string& fragment) {
  absl::StatusOr<LaunchEnv> result = FromMap(env);
  ASSERT_FALSE(result.ok()) << result->DebugString();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(result.status().message()).find(fragment), std::string::npos) << result.status();
}

TEST(LaunchEnv, DefaultsToSingleProcessOnAFreePort) {
  absl::StatusOr<LaunchEnv> env = FromMap({});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 0);
  EXPECT_EQ(env->world_size, 1);
  EXPECT_EQ(env->local_rank, 0);
  EXPECT_EQ(env->local_world_size, 1);
  EXPECT_EQ(env->master_addr, "127.0.0.1");
  EXPECT_GT(env->master_port, 0);
  EXPECT_LE(env->master_port, 65535);
  EXPECT_EQ(env->source, LaunchEnv::Source::kDefault);
}

TEST(LaunchEnv, DefaultsHonourMasterPort) {
  absl::StatusOr<LaunchEnv> env = FromMap({{"MASTER_PORT", "12345"}, {"MASTER_ADDR", "10.0.0.1"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->master_port, 12345);
  EXPECT_EQ(env->master_addr, "10.0.0.1");
}

TEST(LaunchEnv, Torchrun) {
  absl::StatusOr<LaunchEnv> env = FromMap({{"RANK", "5"},
                                           {"WORLD_SIZE", "8"},
                                           {"LOCAL_RANK", "1"},
                                           {"LOCAL_WORLD_SIZE", "4"},
                                           {"MASTER_ADDR", "node01"},
                                           {"MASTER_PORT", "29501"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_world_size, 4);
  EXPECT_EQ(env->master_addr, "node01");
  EXPECT_EQ(env->master_port, 29501);
  EXPECT_EQ(env->source, LaunchEnv::Source::kTorchrun);
  EXPECT_EQ(env->DebugString(), "rank 5/8 (local 1/4), master node01:29501, from torchrun");
}

TEST(LaunchEnv, TorchrunWithoutLocalVariablesIsOneNode) {
  absl::StatusOr<LaunchEnv> env =
      FromMap({{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->local_rank, 2);
  EXPECT_EQ(env->local_world_size, 4);
}

TEST(LaunchEnv, TorchrunWorldOfOneNeedsNoMaster) {
  absl::StatusOr<LaunchEnv> env = FromMap({{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->master_addr, "127.0.0.1");
}

TEST(LaunchEnv, TorchrunWinsOverSlurm) {
  absl::StatusOr<LaunchEnv> env = FromMap({{"RANK", "1"},
                                           {"WORLD_SIZE", "2"},
                                           {"MASTER_ADDR", "a"},
                                           {"MASTER_PORT", "2"},
                                           {"SLURM_PROCID", "7"},
                                           {"SLURM_NTASKS", "16"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 1);
  EXPECT_EQ(env->world_size, 2);
  EXPECT_EQ(env->source, LaunchEnv::Source::kTorchrun);
}

TEST(LaunchEnv, TorchrunErrorsNameTheVariable) {
  const Env ok = {{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "2"}};
  auto with = [&](const std::string& k, const std::string& v) {
    Env e = ok;
    e[k] = v;
    return e;
  };
  auto without = [&](const std::string& k) {
    Env e = ok;
    e.erase(k);
    return e;
  };
  ExpectError(with("RANK", "5"), "RANK=5 is not below WORLD_SIZE=4");
  ExpectError(with("RANK", "4"), "RANK=4 is not below WORLD_SIZE=4");
  ExpectError(with("RANK", "-1"), "RANK=-1 must be >= 0");
  ExpectError(with("RANK", "one"), "RANK='one' is not an integer");
  ExpectError(with("WORLD_SIZE", "0"), "WORLD_SIZE=0 must be >= 1");
  ExpectError(with("WORLD_SIZE", "4x"), "WORLD_SIZE='4x' is not an integer");
  ExpectError(without("WORLD_SIZE"), "WORLD_SIZE is not set but RANK is");
  ExpectError(without("RANK"), "RANK is not set but WORLD_SIZE is");
  ExpectError(without("MASTER_ADDR"), "MASTER_ADDR is not set");
  ExpectError(without("MASTER_PORT"), "MASTER_PORT is not set");
  ExpectError(with("MASTER_PORT", "70000"), "MASTER_PORT=70000 is not a TCP port");
  ExpectError(with("MASTER_PORT", "0"), "MASTER_PORT=0 must be >= 1");
  ExpectError(with("MASTER_PORT", "http"), "MASTER_PORT='http' is not an integer");
  Env local = ok;
  local["LOCAL_RANK"] = "2";
  local["LOCAL_WORLD_SIZE"] = "2";
  ExpectError(local, "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2");
  ExpectError(with("LOCAL_WORLD_SIZE", "0"), "LOCAL_WORLD_SIZE=0 must be >= 1");
}

TEST(LaunchEnv, EmptyValuesCountAsUnset) {
  absl::StatusOr<LaunchEnv> env = FromMap({{"RANK", ""}, {"WORLD_SIZE", ""}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->source, LaunchEnv::Source::kDefault);
}

TEST(LaunchEnv, Slurm) {
  absl::StatusOr<LaunchEnv> env = FromMap({{"SLURM_PROCID", "6"},
                                           {"SLURM_NTASKS", "8"},
                                           {"SLURM_LOCALID", "2"},
                                           {"SLURM_NTASKS_PER_NODE", "4"},
                                           {"SLURM_NODELIST", "gpu[07-08]"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 6);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 2);
  EXPECT_EQ(env->local_world_size, 4);
  EXPECT_EQ(env->master_addr, "gpu07");
  EXPECT_EQ(env->master_port, kDefaultMasterPort);
  EXPECT_EQ(env->source, LaunchEnv::Source::kSlurm);
}

TEST(LaunchEnv, SlurmVariants) {
  // Tasks per node from SLURM_TASKS_PER_NODE's "4(x2)" form, job node list, MASTER_* overrides.
  absl::StatusOr<LaunchEnv> env = FromMap({{"SLURM_PROCID", "0"},
                                           {"SLURM_NTASKS", "8"},
                                           {"SLURM_TASKS_PER_NODE", "4(x2)"},
                                           {"SLURM_JOB_NODELIST", "a1,b2"},
                                           {"MASTER_PORT", "4000"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->local_world_size, 4);
  EXPECT_EQ(env->master_addr, "a1");
  EXPECT_EQ(env->master_port, 4000);

  env = FromMap({{"SLURM_PROCID", "3"},
                 {"SLURM_NTASKS", "6"},
                 {"SLURM_NNODES", "3"},
                 {"SLURM_LOCALID", "1"},
                 {"SLURM_NODELIST", "x[1-3]"},
                 {"MASTER_ADDR", "10.1.1.1"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->local_world_size, 2);
  EXPECT_EQ(env->master_addr, "10.1.1.1");

  env = FromMap({{"SLURM_PROCID", "0"}, {"SLURM_NPROCS", "1"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->world_size, 1);
  EXPECT_EQ(env->master_addr, "127.0.0.1");
}

TEST(LaunchEnv, SlurmErrorsNameTheVariable) {
  ExpectError({{"SLURM_PROCID", "8"}, {"SLURM_NTASKS", "8"}, {"SLURM_NODELIST", "n1"}},
              "SLURM_PROCID=8 is not below SLURM_NTASKS=8");
  ExpectError({{"SLURM_PROCID", "0"}}, "SLURM_PROCID is set but SLURM_NTASKS is not");
  ExpectError({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}}, "neither MASTER_ADDR nor SLURM_NODELIST");
  ExpectError({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "n[1-"}},
              "SLURM_NODELIST: SLURM node list 'n[1-' has an unmatched '['");
  ExpectError({{"SLURM_PROCID", "1"},
               {"SLURM_NTASKS", "2"},
               {"SLURM_NODELIST", "n1"},
               {"SLURM_LOCALID", "3"},
               {"SLURM_NTASKS_PER_NODE", "2"}},
              "SLURM_LOCALID=3 is not below the tasks per node=2");
  ExpectError({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "n1"}, {"SLURM_NTASKS_PER_NODE", "x"}},
              "SLURM_NTASKS_PER_NODE='x' does not start with a task count");
}

TEST(ExpandSlurmNodeList, Forms) {
  using V = std::vector<std::string>;
  EXPECT_EQ(*ExpandSlurmNodeList("node01"), V{"node01"});
  EXPECT_EQ(*ExpandSlurmNodeList("node[01-04,07]"), (V{"node01", "node02", "node03", "node04", "node07"}));
  EXPECT_EQ(*ExpandSlurmNodeList("a[1-2],b,c[9-11]"), (V{"a1", "a2", "b", "c9", "c10", "c11"}));
  EXPECT_EQ(*ExpandSlurmNodeList("rack[3]-gpu"), (V{"rack3-gpu"}));
  EXPECT_EQ(*ExpandSlurmNodeList("n[098-101]"), (V{"n098", "n099", "n100", "n101"}));
}

TEST(ExpandSlurmNodeList, Errors) {
  for (const char* bad : {"", "a,,b", "n[1-", "n1]", "n[[1]]", "n[3-1]", "n[a-b]", "n[1-2][3]", "n[]"}) {
    EXPECT_FALSE(ExpandSlurmNodeList(bad).ok()) << bad;
  }
}

TEST(PickFreePort, ReturnsAPort) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
}

}  // namespace
}  // namespace megatron::distributed
