// The forward/backward pairs of the tensor-parallel mappings on 2 and 4 forked Gloo ranks in fp64, each against
// the collective computed locally from every rank's input: rank r's tensor is base·(r + 1) and its upstream
// gradient is grad·(r + 1), so sums and concatenations are known on every rank.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/zeros.h>

#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::tensor_parallel {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using testing::ExpectClose;
using testing::RandnOnAllRanks;

using MappingFn = std::function<at::Tensor(const at::Tensor&, Group*)>;

at::Tensor Chunk(const at::Tensor& t, int64_t dim, const Group& g) {
  const int64_t chunk = t.size(dim) / g.size();
  return t.narrow(dim, g.rank() * chunk, chunk);
}

// Σ_r t·(r + 1) and cat_r t·(r + 1).
at::Tensor Sum(const at::Tensor& t, const Group& g) { return t * (g.size() * (g.size() + 1) / 2.0); }
at::Tensor Cat(const at::Tensor& t, int64_t dim, const Group& g) {
  std::vector<at::Tensor> parts;
  for (int r = 0; r < g.size(); ++r) parts.push_back(t * (r + 1.0));
  return at::cat(parts, dim);
}

void Mappings(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  const double scale = g.rank() + 1.0;
  const int64_t n = 4 * g.size();
  const at::Tensor base = RandnOnAllRanks({n, 3, n}, 1);
  const at::Tensor last_chunk = base.narrow(2, 0, 4).contiguous();   // shaped like a last-dim shard
  const at::Tensor first_chunk = base.narrow(0, 0, 4).contiguous();  // shaped like a sequence shard

  struct Case {
    const char* name;
    MappingFn fn;
    at::Tensor input;          // before scaling by rank + 1
    at::Tensor output;         // expected output on this rank
    at::Tensor grad_out;       // upstream gradient before scaling
    at::Tensor expected_grad;  // expected input gradient on this rank
  };
  const std::vector<Case> cases = {
      {"copy_to", CopyToTensorParallelRegion, base, base * scale, base, Sum(base, g)},
      {"reduce_from", ReduceFromTensorParallelRegion, base, Sum(base, g), base, base * scale},
      {"scatter_to", ScatterToTensorParallelRegion, base, Chunk(base, 2, g) * scale,
       last_chunk, Cat(last_chunk, 2, g)},
      {"gather_from", GatherFromTensorParallelRegion, last_chunk, Cat(last_chunk, 2, g),
       base, Chunk(base, 2, g) * scale},
      {"scatter_to_sp", ScatterToSequenceParallelRegion, base, Chunk(base, 0, g) * scale,
       first_chunk, Cat(first_chunk, 0, g)},
      {"gather_from_sp", GatherFromSequenceParallelRegion, first_chunk, Cat(first_chunk, 0, g),
       base, Chunk(Sum(base, g), 0, g)},
      {"reduce_scatter_to_sp", ReduceScatterToSequenceParallelRegion, base, Chunk(Sum(base, g), 0, g),
       first_chunk, Cat(first_chunk, 0, g)},
  };
  for (const Case& c : cases) {
    const at::Tensor x = (c.input * scale).requires_grad_();
    const at::Tensor y = c.fn(x, &g);
    ExpectClose(y, c.output, std::string(c.name) + " forward");
    (y * (c.grad_out * scale)).sum().backward();
    ExpectClose(x.grad(), c.expected_grad, std::string(c.name) + " backward");
    // Without a group every mapping is the identity.
    EXPECT_TRUE(c.fn(x, nullptr).is_same(x)) << c.name;
  }
  try {
    ScatterToSequenceParallelRegion(at::zeros({n + 1, 2}, at::kDouble), &g);
    ADD_FAILURE() << "expected a divisibility error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by the tensor-parallel size"), std::string::npos) << e.what();
  }
}

TEST(Mappings, TwoRanks) { distributed::RunMultiProcess(2, Mappings); }
TEST(Mappings, FourRanks) { distributed::RunMultiProcess(4, Mappings); }

}  // namespace
}  // namespace megatron::tensor_parallel
