// NCCL process groups on real GPUs (tags: cuda, multi_gpu; run on the GPU machine with >= 2 GPUs): every
// collective on CUDA tensors against the value computed by hand, CPU tensors of the same context still going
// through Gloo, and subgroups.
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/pipeline_parallel/p2p_communication.h"

namespace megatron::distributed {
namespace {

constexpr int kWorld = 2;

void WithNccl(const std::function<void(DistributedContext&, const at::Device&)>& body) {
  RunMultiProcessWithEnv(kWorld, [&](int rank, int world) {
    absl::StatusOr<LaunchEnv> env = LaunchEnv::FromEnvironment();
    ASSERT_TRUE(env.ok()) << env.status();
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(env->local_rank));
    auto ctx = InitDistributed(*env, Backend::kNccl, absl::Seconds(60));
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    body(**ctx, at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env->local_rank)));
    (void)world;
  }, MultiProcessOptions{absl::Seconds(60), absl::Seconds(180), true});
}

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Counting devices in the parent would initialise CUDA before the fork; the environment tells us instead.
    const char* visible = std::getenv("MEGATRON_TEST_NUM_GPUS");
    if (visible == nullptr || std::atoi(visible) < kWorld) {
      GTEST_SKIP() << "needs " << kWorld << " GPUs: set MEGATRON_TEST_NUM_GPUS (the device scripts do)";
    }
  }
};

TEST_F(NcclTest, CollectivesOnCudaTensors) {
  WithNccl([](DistributedContext& ctx, const at::Device& device) {
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
    const int r = ctx.rank();
    at::Tensor t = at::full({1000}, r + 1.0, opts);
    ASSERT_TRUE(ctx.world().AllReduce(t).ok());
    EXPECT_EQ(t.min().item<float>(), 3.0f);
    EXPECT_EQ(t.max().item<float>(), 3.0f);
    at::Tensor avg = at::full({7}, r * 2.0, opts);
    ASSERT_TRUE(ctx.world().AllReduce(avg, ReduceOp::kAvg).ok());
    EXPECT_EQ(avg[3].item<float>(), 1.0f);

    auto gathered = ctx.world().AllGatherConcat(at::full({2, 3}, static_cast<double>(r), opts));
    ASSERT_TRUE(gathered.ok()) << gathered.status();
    EXPECT_EQ(gathered->size(0), 4);
    EXPECT_EQ((*gathered)[3][0].item<float>(), 1.0f);

    // Rank r contributes arange(4) + r; chunk k of the sum is 2 * arange(4)[k] + 1.
    auto scattered = ctx.world().ReduceScatter(at::arange(4, opts) + r);
    ASSERT_TRUE(scattered.ok()) << scattered.status();
    EXPECT_EQ(scattered->numel(), 2);
    EXPECT_EQ((*scattered)[0].item<float>(), 2.0f * (2 * r) + 1.0f);

    at::Tensor b = r == 1 ? at::full({5}, 42.0, opts) : at::zeros({5}, opts);
    ASSERT_TRUE(ctx.world().Broadcast(b, 1).ok());
    EXPECT_EQ(b[4].item<float>(), 42.0f);

    at::Tensor msg = r == 0 ? at::arange(6, opts) : at::zeros({6}, opts);
    if (r == 0) ASSERT_TRUE(ctx.world().Send(msg, 1).ok());
    else ASSERT_TRUE(ctx.world().Recv(msg, 0).ok());
    EXPECT_EQ(msg[5].item<float>(), 5.0f);

    // CPU tensors in the same context still go through Gloo.
    at::Tensor cpu = at::full({3}, r + 1.0, at::kDouble);
    ASSERT_TRUE(ctx.world().AllReduce(cpu).ok());
    EXPECT_EQ(cpu[0].item<double>(), 3.0);
    ASSERT_TRUE(ctx.world().Barrier().ok());
  });
}

TEST_F(NcclTest, Subgroups) {
  WithNccl([](DistributedContext& ctx, const at::Device& device) {
    auto solo = ctx.NewGroup({ctx.rank()}, "solo0");  // every rank calls NewGroup in the same order
    ASSERT_TRUE(solo.ok()) << solo.status();
    auto other = ctx.NewGroup({1 - ctx.rank()}, "solo1");
    ASSERT_TRUE(other.ok()) << other.status();
    auto pair = ctx.NewGroup({1, 0}, "pair");
    ASSERT_TRUE(pair.ok()) << pair.status();
    at::Tensor t = at::full({4}, ctx.rank() == 1 ? 10.0 : 1.0, at::TensorOptions().device(device));
    ASSERT_TRUE((*pair)->AllReduce(t).ok());
    EXPECT_EQ(t[0].item<float>(), 11.0f);
    EXPECT_EQ((*pair)->rank(), 1 - ctx.rank());
  });
}

// 1F1B's pattern on NCCL: both ranks send a large message before receiving the other's (the first stage an
// activation, the last a gradient). On one communicator per pair this deadlocks on the GPU (each send waits for
// a receive queued behind the peer's own send); see Note [NCCL point-to-point directions]. Also: delivery by
// tag out of arrival order, and the receiver's tensor lands on its own GPU.
TEST_F(NcclTest, PipelineMessagesBothWaysAndByTag) {
  WithNccl([](DistributedContext& ctx, const at::Device& device) {
    pipeline_parallel::PipelineP2P p2p(&ctx.world());
    const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(device);
    const int r = ctx.rank();
    const int64_t n = 32 << 20;  // 64 MiB: far above NCCL's eager buffers
    for (int step = 0; step < 3; ++step) {
      ASSERT_TRUE(p2p.Send(at::full({n}, 10.0 * r + step, opts), 1 - r, 100 + step).ok());
      absl::StatusOr<at::Tensor> got = p2p.Recv(1 - r, 100 + step);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->device(), device);
      EXPECT_EQ((*got)[n - 1].item<float>(), 10.0f * (1 - r) + step);
    }
    if (r == 0) {
      for (int tag : {2, 0, 1}) ASSERT_TRUE(p2p.Send(at::full({4, tag + 1}, tag, opts), 1, tag).ok());
    } else {
      for (int tag : {0, 1, 2}) {
        absl::StatusOr<at::Tensor> got = p2p.Recv(0, tag);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->size(1), tag + 1);
        EXPECT_EQ((*got)[0][0].item<float>(), static_cast<float>(tag));
      }
    }
    ASSERT_TRUE(p2p.WaitSends().ok());
    ASSERT_TRUE(ctx.world().Barrier().ok());
  });
}

// A rank that never joins a collective should end the job instead of hanging it. NCCL waits are stream-ordered, so
// the waiting rank blocks only when it reads the result, and ProcessGroupNCCL's watchdog is what notices.
// DISABLED because it fails today (2x H200, libtorch 2.11, 2026-11-22): after 5 s the watchdog logs "[Rank 0]
// Watchdog caught collective operation timeout: WorkNCCL(SeqNum=2, OpType=ALLREDUCE, ...)", but rank 0 stays blocked
// in .item() until the job timeout (also with TORCH_NCCL_ASYNC_ERROR_HANDLING=1, where the watchdog starts a debug
// dump and the process still had not exited 35 s later). Run it with --gtest_also_run_disabled_tests.
TEST_F(NcclTest, DISABLED_StuckRankEndsTheJobInsteadOfHanging) {
  MultiProcessOptions options;
  options.backend = Backend::kNccl;
  options.collective_timeout = absl::Seconds(5);
  options.job_timeout = absl::Seconds(60);
  const absl::Time start = absl::Now();
  absl::Status status = RunMultiProcessAllowingFailure(kWorld, [](DistributedContext& ctx) {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(ctx.local_rank()));
    at::Tensor t = at::ones({1024}, at::TensorOptions().device(at::Device(at::kCUDA, ctx.local_rank())));
    // Both ranks first: NCCL creates the communicator on the first collective, and that creation has no timeout
    // (see the note on NCCL in process_group.h); the watchdog covers collectives on a live communicator.
    ASSERT_TRUE(ctx.world().AllReduce(t).ok());
    EXPECT_EQ(t.sum().item<float>(), 2048.0f);
    if (ctx.rank() == 1) {
      sleep(40);  // never joins the second all-reduce
      return;
    }
    ASSERT_TRUE(ctx.world().AllReduce(t).ok());  // queued on the stream: returns at once
    (void)t.sum().item<float>();                  // waits for the device: aborted by the watchdog
  }, options);
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("rank 0"), std::string::npos) << status;
  EXPECT_LT(took, absl::Seconds(35)) << "the stuck job took " << took;
  std::printf("stuck rank: job ended after %s: %s\n", absl::FormatDuration(took).c_str(),
              std::string(status.message()).c_str());
}

}  // namespace
}  // namespace megatron::distributed
