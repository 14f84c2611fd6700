// Tensor-parallel layers on 2 and 4 forked Gloo ranks in fp64: outputs, input gradients and the full weight
// gradients assembled from the shards equal the single-process layers (transformer::Linear, at::embedding)
// within 1e-10 relative; with a null group the layers are the plain ones bit for bit.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/randint.h>

#include <string>

#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/tensor_parallel/layers.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/transformer/layers.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::tensor_parallel {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using testing::ExpectClose;
using testing::RandnOnAllRanks;
using testing::ToDouble;
using transformer::InitMethod;
using transformer::Linear;

constexpr uint64_t kWeightSeed = 1234;
constexpr InitMethod kInit{0.02};

// Gives a zero-initialised bias non-trivial values (the same on every rank): `full` is the unsharded bias.
void SetBias(const at::Tensor& bias, const at::Tensor& full) { bias.detach().copy_(full); }

at::Tensor Slice(const at::Tensor& t, int64_t dim, const Group& g) {
  const int64_t chunk = t.size(dim) / g.size();
  return t.narrow(dim, g.rank() * chunk, chunk);
}

void ColumnParallel(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  const int64_t in = 6, out = 8;
  for (GatherOutput gather : {GatherOutput::kNo, GatherOutput::kYes}) {
    const std::string what = gather == GatherOutput::kYes ? "gather_output " : "parallel output ";
    ManualSeed(kWeightSeed);
    Linear ref(in, out, /*bias=*/true, kInit);
    ManualSeed(kWeightSeed);
    ColumnParallelLinear col(in, out, /*bias=*/true, gather, kInit, &g);
    ToDouble(ref);
    ToDouble(col);
    EXPECT_TRUE(at::equal(AllGatherAlong(col.weight().detach(), 0, g, "test"), ref.weight().detach()))
        << what << "shards of the master weight";
    const at::Tensor bias = RandnOnAllRanks({out}, 7);
    SetBias(ref.bias(), bias);
    SetBias(col.bias(), Slice(bias, 0, g));

    const at::Tensor x = RandnOnAllRanks({3, 5, in}, 11).requires_grad_();
    const at::Tensor x_ref = x.detach().clone().requires_grad_();
    const at::Tensor y_ref = ref.Forward(x_ref);
    const at::Tensor grad_y = RandnOnAllRanks(y_ref.sizes(), 13);
    (y_ref * grad_y).sum().backward();

    const at::Tensor y = col.Forward(x);
    if (gather == GatherOutput::kYes) {
      ExpectClose(y, y_ref.detach(), what + "output");
      (y * grad_y).sum().backward();
    } else {
      ExpectClose(y, Slice(y_ref.detach(), -1, g), what + "output shard");
      (y * Slice(grad_y, -1, g)).sum().backward();
    }
    ExpectClose(x.grad(), x_ref.grad(), what + "input grad");
    ExpectClose(AllGatherAlong(col.weight().grad(), 0, g, "test"), ref.weight().grad(), what + "weight grad");
    ExpectClose(AllGatherAlong(col.bias().grad(), 0, g, "test"), ref.bias().grad(), what + "bias grad");
  }

  // TP = 1: the plain layer, bit for bit.
  ManualSeed(kWeightSeed);
  Linear ref(in, out, true, kInit);
  ManualSeed(kWeightSeed);
  ColumnParallelLinear single(in, out, true, GatherOutput::kYes, kInit, nullptr);
  const at::Tensor x = RandnOnAllRanks({4, in}, 5).to(at::kFloat);
  EXPECT_TRUE(at::equal(single.Forward(x), ref.Forward(x)));

  // Divisibility is checked up front, naming the dimension.
  try {
    ColumnParallelLinear bad(in, 7, true, GatherOutput::kNo, kInit, &g);
    ADD_FAILURE() << "expected an error for output_size=7";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("output_size=7 is not divisible by the tensor-parallel size"),
              std::string::npos)
        << e.what();
  }
}

void RowParallel(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  const int64_t in = 8, out = 6;
  for (InputIsParallel parallel_input : {InputIsParallel::kNo, InputIsParallel::kYes}) {
    const std::string what = parallel_input == InputIsParallel::kYes ? "parallel input " : "full input ";
    ManualSeed(kWeightSeed);
    Linear ref(in, out, true, kInit);
    ManualSeed(kWeightSeed);
    RowParallelLinear row(in, out, true, parallel_input, kInit, &g);
    ToDouble(ref);
    ToDouble(row);
    const at::Tensor bias = RandnOnAllRanks({out}, 7);
    SetBias(ref.bias(), bias);
    SetBias(row.bias(), bias);

    const at::Tensor x_full = RandnOnAllRanks({3, 5, in}, 11);
    const at::Tensor x_ref = x_full.clone().requires_grad_();
    const at::Tensor y_ref = ref.Forward(x_ref);
    const at::Tensor grad_y = RandnOnAllRanks(y_ref.sizes(), 13);
    (y_ref * grad_y).sum().backward();

    const bool split = parallel_input == InputIsParallel::kYes;
    const at::Tensor x = (split ? Slice(x_full, -1, g) : x_full).clone().requires_grad_();
    const at::Tensor y = row.Forward(x);
    ExpectClose(y, y_ref.detach(), what + "output");
    (y * grad_y).sum().backward();
    ExpectClose(x.grad(), split ? Slice(x_ref.grad(), -1, g) : x_ref.grad(), what + "input grad");
    ExpectClose(AllGatherAlong(row.weight().grad(), 1, g, "test"), ref.weight().grad(), what + "weight grad");
    ExpectClose(row.bias().grad(), ref.bias().grad(), what + "bias grad");
  }
  try {
    RowParallelLinear bad(6 * g.size() + 1, 4, true, InputIsParallel::kYes, kInit, &g);
    ADD_FAILURE() << "expected an error for input_size";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("input_size="), std::string::npos) << e.what();
  }
}

void Embedding(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  const int64_t hidden = 5;
  for (int vocab : {12, 11, 9}) {  // 11 and 9 are not divisible by 2 or 4: padded
    const int64_t padded = parallel_state::PaddedVocabSize(vocab, 1, g.size());
    const std::string what = "vocab " + std::to_string(vocab) + " padded to " + std::to_string(padded) + ": ";
    ManualSeed(kWeightSeed);
    const at::Tensor weight_ref = at::empty({padded, hidden}).normal_(0.0, kInit.std).to(at::kDouble);
    weight_ref.requires_grad_();
    ManualSeed(kWeightSeed);
    VocabParallelEmbedding emb(padded, hidden, kInit, &g);
    ToDouble(emb);
    EXPECT_EQ(emb.vocab_end() - emb.vocab_start(), padded / g.size());

    ManualSeed(17);
    const at::Tensor ids = at::randint(vocab, {4, 7}, at::TensorOptions().dtype(at::kLong));
    const at::Tensor y_ref = at::embedding(weight_ref, ids);
    const at::Tensor grad_y = RandnOnAllRanks(y_ref.sizes(), 13);
    (y_ref * grad_y).sum().backward();

    const at::Tensor y = emb.Forward(ids);
    ExpectClose(y, y_ref.detach(), what + "output");
    (y * grad_y).sum().backward();
    ExpectClose(AllGatherAlong(emb.weight().grad(), 0, g, "test"), weight_ref.grad(), what + "weight grad");
  }
  try {
    VocabParallelEmbedding bad(4 * g.size() + 1, hidden, kInit, &g);
    ADD_FAILURE() << "expected an error for padded_vocab_size";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("padded_vocab_size="), std::string::npos) << e.what();
  }
}

// Megatron's MLP: Column(no gather) -> gelu -> Row(parallel input), with and without sequence parallelism,
// against the plain two-Linear MLP. Activations are [s, b, h]; with SP each rank holds [s/tp, b, h].
void Mlp(DistributedContext& ctx) {
  at::set_num_threads(1);
  Group& g = ctx.world();
  const int64_t s = 8, b = 3, h = 8, ffn = 16;
  for (SequenceParallel sp : {SequenceParallel::kOff, SequenceParallel::kOn}) {
    const std::string what = sp == SequenceParallel::kOn ? "SP MLP " : "TP MLP ";
    const bool seq = sp == SequenceParallel::kOn;
    ManualSeed(kWeightSeed);
    Linear fc1(h, ffn, true, kInit);
    Linear fc2(ffn, h, true, kInit);
    ManualSeed(kWeightSeed);
    ColumnParallelLinear col(h, ffn, true, GatherOutput::kNo, kInit, &g, sp);
    RowParallelLinear row(ffn, h, true, InputIsParallel::kYes, kInit, &g, sp);
    for (transformer::MegatronModule* m : std::initializer_list<transformer::MegatronModule*>{&fc1, &fc2, &col, &row}) {
      ToDouble(*m);
    }
    const at::Tensor bias1 = RandnOnAllRanks({ffn}, 3), bias2 = RandnOnAllRanks({h}, 4);
    SetBias(fc1.bias(), bias1);
    SetBias(col.bias(), Slice(bias1, 0, g));
    SetBias(fc2.bias(), bias2);
    SetBias(row.bias(), bias2);

    const at::Tensor x_full = RandnOnAllRanks({s, b, h}, 11);
    const at::Tensor x_ref = x_full.clone().requires_grad_();
    const at::Tensor y_ref = fc2.Forward(at::gelu(fc1.Forward(x_ref)));
    const at::Tensor grad_y = RandnOnAllRanks(y_ref.sizes(), 13);
    (y_ref * grad_y).sum().backward();

    const at::Tensor x = (seq ? Slice(x_full, 0, g) : x_full).clone().requires_grad_();
    const at::Tensor y = row.Forward(at::gelu(col.Forward(x)));
    ExpectClose(y, seq ? Slice(y_ref.detach(), 0, g) : y_ref.detach(), what + "output");
    (y * (seq ? Slice(grad_y, 0, g) : grad_y)).sum().backward();
    ExpectClose(x.grad(), seq ? Slice(x_ref.grad(), 0, g) : x_ref.grad(), what + "input grad");
    ExpectClose(AllGatherAlong(col.weight().grad(), 0, g, "test"), fc1.weight().grad(), what + "fc1 weight grad");
    ExpectClose(AllGatherAlong(col.bias().grad(), 0, g, "test"), fc1.bias().grad(), what + "fc1 bias grad");
    ExpectClose(AllGatherAlong(row.weight().grad(), 1, g, "test"), fc2.weight().grad(), what + "fc2 weight grad");
    // Under SP the row bias sees only this rank's tokens; finalize_model_grads' all-reduce completes it.
    ASSERT_EQ(row.sequence_parallel_parameters().size(), seq ? 1u : 0u);
    at::Tensor bias2_grad = row.bias().grad().clone();
    if (seq) AllReduceInPlace(bias2_grad, g, distributed::ReduceOp::kSum, "test");
    ExpectClose(bias2_grad, fc2.bias().grad(), what + "fc2 bias grad");
  }
}

TEST(ColumnParallelLinear, TwoRanks) { distributed::RunMultiProcess(2, ColumnParallel); }
TEST(ColumnParallelLinear, FourRanks) { distributed::RunMultiProcess(4, ColumnParallel); }
TEST(RowParallelLinear, TwoRanks) { distributed::RunMultiProcess(2, RowParallel); }
TEST(RowParallelLinear, FourRanks) { distributed::RunMultiProcess(4, RowParallel); }
TEST(VocabParallelEmbedding, TwoRanks) { distributed::RunMultiProcess(2, Embedding); }
TEST(VocabParallelEmbedding, FourRanks) { distributed::RunMultiProcess(4, Embedding); }
TEST(ParallelMlp, TwoRanks) { distributed::RunMultiProcess(2, Mlp); }
TEST(ParallelMlp, FourRanks) { distributed::RunMultiProcess(4, Mlp); }

}  // namespace
}  // namespace megatron::tensor_parallel
