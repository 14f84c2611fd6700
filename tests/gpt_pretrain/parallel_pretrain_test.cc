// Multi-process GPT pretraining (Gloo on CPU) equals the single-process run: data parallelism (each rank its
// slice of the global batch, gradients averaged), tensor parallelism (with and without sequence parallelism),
// bucketed gradient all-reduce overlapped with backward and the distributed optimizer, pipeline parallelism
// (1F1B with an uneven layer split, interleaved, with TP, with DP and the distributed optimizer; tied embeddings) and
// their combinations give the same per-iteration train losses and final validation loss (up to summation
// order), with gradient clipping active; bad layouts fail with an error naming the field.
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/pretrain_gpt.h"
#include "megatron/core/training/recipe.h"
#include "tests/gpt_pretrain/tiny_corpus.h"

namespace megatron::training {
namespace {

using testing::FreshDir;
using testing::Quiet;

namespace fs = std::filesystem;
using distributed::DistributedContext;
using distributed::MultiProcessOptions;
using distributed::RunMultiProcess;

// Dropout off (the TP dropout streams differ from the single-process one), fp32, a clip that is active.
proto::PretrainRecipe TinyRecipe(const std::string& dir) {
  const std::string text = R"pb(
    name: "tiny"
    model { num_layers: 2 hidden_size: 32 num_attention_heads: 4 num_query_groups: 2 ffn_hidden_size: 64
            max_position_embeddings: 32 hidden_dropout: 0 attention_dropout: 0 make_vocab_size_divisible_by: 8 }
    data { format: "jsonl" tokenizer_vocab_size: 300 seq_length: 16 split: "90,10,0" }
    training { micro_batch_size: 2 global_batch_size: 8 train_iters: 6 eval_interval: 3 eval_iters: 2
               num_threads: 1 }
    optimizer { lr: 1e-2 min_lr: 1e-3 lr_warmup_iters: 2 clip_grad: 0.3 }
    sample { max_new_tokens: 0 }
  )pb";
  return testing::RecipeOnTinyCorpus(dir, text);
}

MultiProcessOptions JobOptions() {
  MultiProcessOptions o;
  o.collective_timeout = absl::Seconds(30);
  o.job_timeout = absl::Seconds(90);
  return o;
}

void ExpectRelativelyClose(double actual, double expected, const std::string& what) {
  EXPECT_LE(std::abs(actual - expected), 1e-5 * std::abs(expected)) << what << ": " << actual << " vs " << expected;
}

// A parallel run reproduces the single-process run: every iteration's loss and gradient norm (Adam's update hardly
// depends on the gradients' scale; the norm does, so a missing 1/DP or xCP shows), every validation, and the
// parameter count.
void ExpectSameRun(const PretrainResult& run, const PretrainResult& reference, const std::string& name) {
  ASSERT_EQ(run.train_losses.size(), reference.train_losses.size());
  for (size_t i = 0; i < run.train_losses.size(); ++i) {
    ExpectRelativelyClose(run.train_losses[i], reference.train_losses[i],
                          name + " train loss at iteration " + std::to_string(i + 1));
    ExpectRelativelyClose(run.grad_norms[i], reference.grad_norms[i],
                          name + " gradient norm at iteration " + std::to_string(i + 1));
  }
  ASSERT_EQ(run.valid_losses.size(), reference.valid_losses.size());
  for (size_t i = 0; i < run.valid_losses.size(); ++i) {
    EXPECT_EQ(run.valid_losses[i].first, reference.valid_losses[i].first);
    ExpectRelativelyClose(run.valid_losses[i].second, reference.valid_losses[i].second,
                          name + " validation loss " + std::to_string(i));
  }
  EXPECT_EQ(run.num_parameters, reference.num_parameters) << name;
}

TEST(ParallelPretrain, DataAndTensorParallelRunsEqualTheSingleProcessRun) {
  const std::string dir = FreshDir("parallel");
  const proto::PretrainRecipe recipe = TinyRecipe(dir);
  // The reference, in this process; it also prepares the data the ranks then share.
  absl::StatusOr<PretrainResult> reference = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(reference->train_losses.size(), 6u);
  ASSERT_FALSE(reference->valid_losses.empty());

  struct Case {
    const char* name;
    int world, tp;
    bool sp;
    bool distributed_optimizer = false;
  };
  for (const Case& c : {Case{"DP=2", 2, 1, false}, Case{"DP=2 distributed optimizer", 2, 1, false, true},
                        Case{"TP=2", 2, 2, false}, Case{"TP=2+SP", 2, 2, true}, Case{"TP=2 x DP=2", 4, 2, false}}) {
    SCOPED_TRACE(c.name);
    const std::string name = c.name;
    RunMultiProcess(
        c.world,
        [&](DistributedContext& ctx) {
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_tensor_model_parallel_size(c.tp);
          r.mutable_parallel()->set_sequence_parallel(c.sp);
          r.mutable_parallel()->set_use_distributed_optimizer(c.distributed_optimizer);
          r.mutable_parallel()->set_ddp_bucket_size(3000);  // several buckets for this model
          PretrainOptions options = Quiet();
          options.distributed = &ctx;
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_TRUE(run.ok()) << name << ": " << run.status();
          ExpectSameRun(*run, *reference, name);
        },
        JobOptions());
  }
}

TEST(ParallelPretrain, PipelineParallelRunsEqualTheSingleProcessRun) {
  const std::string dir = FreshDir("pipeline");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_model()->set_num_layers(4);
  recipe.mutable_training()->set_train_iters(4);
  recipe.mutable_training()->set_eval_interval(2);
  absl::StatusOr<PretrainResult> reference = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(reference.ok()) << reference.status();

  struct Case {
    const char* name;
    int world, tp, pp, vp;
    std::vector<int> layers_per_stage;
    bool distributed_optimizer = false;
  };
  for (const Case& c : {Case{"PP=2 uneven 1+3", 2, 1, 2, 1, {1, 3}}, Case{"PP=2 x VP=2", 2, 1, 2, 2, {}},
                        Case{"TP=2 x PP=2", 4, 2, 2, 1, {}},
                        Case{"PP=2 x DP=2 distributed optimizer", 4, 1, 2, 1, {}, true}}) {
    SCOPED_TRACE(c.name);
    const std::string name = c.name;
    RunMultiProcess(
        c.world,
        [&](DistributedContext& ctx) {
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_tensor_model_parallel_size(c.tp);
          r.mutable_parallel()->set_pipeline_model_parallel_size(c.pp);
          r.mutable_parallel()->set_virtual_pipeline_model_parallel_size(c.vp);
          for (int n : c.layers_per_stage) r.mutable_parallel()->add_pipeline_layers_per_stage(n);
          r.mutable_parallel()->set_use_distributed_optimizer(c.distributed_optimizer);
          r.mutable_parallel()->set_ddp_bucket_size(3000);
          PretrainOptions options = Quiet();
          options.distributed = &ctx;
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_TRUE(run.ok()) << name << ": " << run.status();
          ExpectSameRun(*run, *reference, name);
        },
        JobOptions());
  }
}

TEST(ParallelPretrain, ContextParallelRunsEqualTheSingleProcessRun) {
  const std::string dir = FreshDir("context");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_model()->set_position_embedding_type(proto::ROPE);
  recipe.mutable_training()->set_train_iters(4);
  recipe.mutable_training()->set_eval_interval(2);
  absl::StatusOr<PretrainResult> reference = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(reference.ok()) << reference.status();
  struct Case {
    const char* name;
    int world, tp, cp, pp;
  };
  for (const Case& c : {Case{"CP=2", 2, 1, 2, 1}, Case{"TP=2 x CP=2", 4, 2, 2, 1}, Case{"CP=2 x DP=2", 4, 1, 2, 1},
                        Case{"CP=2 x PP=2", 4, 1, 2, 2}}) {
    SCOPED_TRACE(c.name);
    const std::string name = c.name;
    RunMultiProcess(
        c.world,
        [&](DistributedContext& ctx) {
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_tensor_model_parallel_size(c.tp);
          r.mutable_parallel()->set_context_parallel_size(c.cp);
          r.mutable_parallel()->set_pipeline_model_parallel_size(c.pp);
          r.mutable_parallel()->set_ddp_bucket_size(3000);
          PretrainOptions options = Quiet();
          options.distributed = &ctx;
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_TRUE(run.ok()) << name << ": " << run.status();
          ExpectSameRun(*run, *reference, name);
        },
        JobOptions());
  }
}

TEST(ParallelPretrain, BadLayoutsNameTheField) {
  const std::string dir = FreshDir("parallel_errors");
  const proto::PretrainRecipe recipe = TinyRecipe(dir);
  {  // TP > 1 without processes.
    proto::PretrainRecipe r = recipe;
    r.mutable_parallel()->set_tensor_model_parallel_size(2);
    absl::StatusOr<PretrainResult> run = PretrainGpt(r, Quiet());
    ASSERT_FALSE(run.ok());
    EXPECT_NE(run.status().message().find("parallel.tensor_model_parallel_size"), std::string::npos)
        << run.status();
  }
  RunMultiProcess(
      2,
      [&](DistributedContext& ctx) {
        PretrainOptions options = Quiet();
        options.distributed = &ctx;
        {  // TP=3 does not divide a world of 2.
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_tensor_model_parallel_size(3);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("parallel.tensor_model_parallel_size"), std::string::npos)
              << run.status();
        }
        {  // DP=2 x micro-batch 2 does not divide a global batch of 6.
          proto::PretrainRecipe r = recipe;
          r.mutable_training()->set_global_batch_size(6);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("training.global_batch_size"), std::string::npos) << run.status();
        }
        {  // PP=3 does not divide a world of 2.
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_pipeline_model_parallel_size(3);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("pipeline_model_parallel_size"), std::string::npos) << run.status();
        }
        {  // 2 layers cannot be split evenly over PP=2 x VP=2 chunks.
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_pipeline_model_parallel_size(2);
          r.mutable_parallel()->set_virtual_pipeline_model_parallel_size(2);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("model.num_layers"), std::string::npos) << run.status();
        }
        {  // An explicit layout must cover every layer (never drop one silently).
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_pipeline_model_parallel_size(2);
          r.mutable_parallel()->add_pipeline_layers_per_stage(1);
          r.mutable_parallel()->add_pipeline_layers_per_stage(2);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("parallel.pipeline_layers_per_stage"), std::string::npos)
              << run.status();
        }
        {  // Interleaving needs the micro-batches per step (here 6 / 2 = 3) to be a multiple of PP.
          proto::PretrainRecipe r = recipe;
          r.mutable_model()->set_num_layers(4);
          r.mutable_training()->set_global_batch_size(6);
          r.mutable_parallel()->set_pipeline_model_parallel_size(2);
          r.mutable_parallel()->set_virtual_pipeline_model_parallel_size(2);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("interleaved pipeline schedule"), std::string::npos) << run.status();
        }
        {  // CP=2 needs the sequence (16) divisible by 2 x CP: 18 is not.
          proto::PretrainRecipe r = recipe;
          r.mutable_parallel()->set_context_parallel_size(2);
          r.mutable_data()->set_seq_length(18);
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_FALSE(run.ok());
          EXPECT_NE(run.status().message().find("data.seq_length"), std::string::npos) << run.status();
        }
      },
      JobOptions());
}

}  // namespace
}  // namespace megatron::training
