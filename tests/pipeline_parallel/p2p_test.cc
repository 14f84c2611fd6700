// PipelineP2P on 2 forked Gloo ranks: messages arrive in FIFO order on the wire (as NCCL requires) but are
// delivered by tag, whatever order the receiver asks in; shapes and dtypes travel with the message.
#include "megatron/core/pipeline_parallel/p2p_communication.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <gtest/gtest.h>

#include "megatron/core/distributed/multi_process_testing.h"

namespace megatron::pipeline_parallel {
namespace {

using distributed::DistributedContext;
using distributed::RunMultiProcess;

at::Tensor Message(int tag) {
  // A different shape and dtype per tag, so a mix-up cannot go unnoticed.
  return at::arange(tag * 100, tag * 100 + 6 * (tag + 1), at::TensorOptions().dtype(tag % 2 ? at::kFloat : at::kDouble))
      .reshape({tag + 1, 6});
}

TEST(PipelineP2P, ReceivesByTagInAnyOrder) {
  RunMultiProcess(2, [](DistributedContext& ctx) {
    PipelineP2P p2p(&ctx.world());
    if (ctx.rank() == 0) {
      for (int tag : {3, 1, 4, 0, 2}) ASSERT_TRUE(p2p.Send(Message(tag), 1, tag).ok());
      // Both directions at once: rank 1 sends back while rank 0 still has sends in flight.
      absl::StatusOr<at::Tensor> back = p2p.Recv(1, 7);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_TRUE(at::equal(*back, Message(7)));
      ASSERT_TRUE(p2p.WaitSends().ok());
    } else {
      ASSERT_TRUE(p2p.Send(Message(7), 0, 7).ok());
      for (int tag : {0, 1, 2, 3, 4}) {  // 0 arrives fourth: 3 and 1 (then 4) wait in the stash
        absl::StatusOr<at::Tensor> got = p2p.Recv(0, tag);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->scalar_type(), Message(tag).scalar_type()) << "tag " << tag;
        EXPECT_TRUE(at::equal(*got, Message(tag))) << "tag " << tag;
      }
      ASSERT_TRUE(p2p.WaitSends().ok());
    }
  });
}

// A message that never comes is an error naming the peer and the tag (a timeout, or a failure once the idle
// peer has exited), not a hang.
TEST(PipelineP2P, MissingMessageIsAnErrorNamingThePeerAndTag) {
  distributed::MultiProcessOptions options;
  options.collective_timeout = absl::Seconds(2);
  RunMultiProcess(2, [](DistributedContext& ctx) {
    PipelineP2P p2p(&ctx.world());
    if (ctx.rank() == 1) {
      absl::StatusOr<at::Tensor> got = p2p.Recv(0, 5);
      ASSERT_FALSE(got.ok());
      EXPECT_NE(std::string(got.status().message()).find("peer group rank 0, tag 5"), std::string::npos)
          << got.status();
    }
  }, options);
}

}  // namespace
}  // namespace megatron::pipeline_parallel
