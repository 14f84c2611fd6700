// Layout-independent checkpoints across processes (Gloo on CPU):
//  * round trips are exact: a TP=2 x PP=2 checkpoint (4 ranks, SwiGLU, GQA) read whole equals the TP=1 model bit
//    for bit (the TP layers draw their shards of the TP=1 weights, so the TP=1 model from the same seed IS the
//    gathered model), optimizer state included; a TP=1 checkpoint loaded at TP=2 and at TP=4 (302 vocabulary
//    rows, not divisible by 4) gives each rank its slice, cut here independently;
//  * the distributed optimizer's state (DP=2) saved and loaded into the plain AdamW of one process equals the
//    state of that AdamW taking the same steps, bit for bit;
//  * resuming at another layout continues the run: N iterations at layout A, or k at A, save, and N - k at B, give
//    the same losses within 1e-5 (relative; B's summation order differs), for TP2xPP2 -> TP1, DP2 with the
//    distributed optimizer -> PP2xVP2, TP1 -> TP2xDP2 distributed optimizer, CP2xDP2 distributed optimizer -> TP2;
//  * a truncated shard is one error naming its file; strict loading of a different model lists what differs and
//    non-strict loading proceeds; a TP=2 run samples (on rank 0, from its final checkpoint) what one process
//    resuming from that checkpoint samples.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/scalar_tensor.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/distributed/data_parallel.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/models/gpt/gpt_checkpoint.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/optimizer/distributed_optimizer.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/pipeline_parallel/gpt_chunks.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/pretrain_gpt.h"
#include "megatron/core/training/recipe.h"
#include "megatron/core/utils/file_io.h"
#include "tests/gpt_pretrain/tiny_corpus.h"

namespace megatron::training {
namespace {

namespace fs = std::filesystem;
using checkpointing::CheckpointReader;
using distributed::DistributedContext;
using distributed::MultiProcessOptions;
using distributed::RunMultiProcess;
using models::GptCheckpointPlacement;
using testing::FreshDir;
using testing::Quiet;

constexpr int64_t kVocab = 302;
constexpr uint64_t kSeed = 1234;

MultiProcessOptions JobOptions() {
  MultiProcessOptions o;
  o.collective_timeout = absl::Seconds(30);
  o.job_timeout = absl::Seconds(90);
  return o;
}

transformer::TransformerConfig LlamaLike(int64_t vocab) {
  transformer::TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 8;
  c.num_query_groups = 4;
  c.kv_channels = 4;
  c.ffn_hidden_size = 24;
  c.max_position_embeddings = 16;
  c.vocab_size = static_cast<int>(vocab);
  c.hidden_dropout = 0;
  c.attention_dropout = 0;
  c.normalization = transformer::Normalization::kRMSNorm;
  c.activation = transformer::Activation::kSwiGLU;
  c.position_embedding_type = transformer::PositionEmbedding::kRope;
  c.share_embeddings_and_output_weights = false;
  return c;
}

// Rank r's slice of the TP=1 tensor `full`, cut as the layers shard (independently of the checkpoint code);
// vocabulary padding rows are NaN (not compared).
at::Tensor Slice(const std::string& name, const at::Tensor& full, int r, int tp) {
  const auto ends = [&](const char* s) { return absl::EndsWith(name, s); };
  if (ends("linear_fc1.weight") || ends("linear_fc1.bias")) {
    const int64_t f = full.size(0) / 2, c = f / tp;
    return at::cat({full.narrow(0, r * c, c), full.narrow(0, f + r * c, c)});
  }
  if (ends("linear_qkv.weight") || ends("linear_qkv.bias")) return full.chunk(tp, 0)[r];
  if (ends("linear_proj.weight") || ends("linear_fc2.weight")) return full.chunk(tp, 1)[r];
  if (ends("word_embeddings.weight") || ends("output_layer.weight")) {
    const int64_t n = (full.size(0) + tp - 1) / tp;
    at::Tensor out = at::full({n, full.size(1)}, std::numeric_limits<float>::quiet_NaN());
    const int64_t rows = std::max<int64_t>(0, std::min(n, full.size(0) - r * n));
    if (rows > 0) out.narrow(0, 0, rows).copy_(full.narrow(0, r * n, rows));
    return out;
  }
  return full;
}

void ExpectSlice(const at::Tensor& local, const at::Tensor& expected, const std::string& what) {
  ASSERT_EQ(local.sizes(), expected.sizes()) << what;
  const at::Tensor real = at::isnan(expected).logical_not();
  EXPECT_TRUE(local.masked_select(real).equal(expected.masked_select(real))) << what;
}

// Synthetic optimizer state, an elementwise function of the parameter (so every layout computes the same).
std::map<std::string, at::Tensor> SyntheticState(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, p] : named) {
    state["exp_avg." + name] = p.detach() * 2 + 1;
    state["exp_avg_sq." + name] = p.detach() * p.detach();
  }
  state["step"] = at::scalar_tensor(5, at::kLong);
  return state;
}

// Builds this rank's chunks of LlamaLike at TP = world / pp (TP groups: consecutive ranks) from kSeed.
struct RankModel {
  std::shared_ptr<distributed::Group> tp;
  pipeline_parallel::GptChunks chunks;
  std::vector<std::pair<std::string, at::Tensor>> named;
  GptCheckpointPlacement placement;
};
RankModel BuildRankModel(DistributedContext& ctx, int pp, int64_t vocab, uint64_t seed) {
  RankModel m;
  const int tp = ctx.world_size() / pp;
  for (int first = 0; first < ctx.world_size(); first += tp) {
    std::vector<int> ranks;
    for (int i = 0; i < tp; ++i) ranks.push_back(first + i);
    auto g = ctx.NewGroup(ranks, "tp");
    EXPECT_TRUE(g.ok());
    if (*g) m.tp = *g;
  }
  const int tp_rank = ctx.rank() % tp, pp_rank = ctx.rank() / tp;
  const int padded = parallel_state::PaddedVocabSize(static_cast<int>(vocab), 1, tp);
  tensor_parallel::ManualSeed(seed);
  auto assignment = parallel_state::LayerAssignment::Even(2, pp);
  auto chunks = pipeline_parallel::BuildGptChunks(LlamaLike(padded), transformer::ModelParallel{m.tp.get()},
                                                  *assignment, pp_rank);
  EXPECT_TRUE(chunks.ok()) << chunks.status();
  m.chunks = std::move(*chunks);
  for (const auto& chunk : m.chunks) {
    for (auto& np : chunk->NamedParameters()) m.named.push_back(np);
  }
  m.placement.layout = {ctx.world_size(), tp, pp, 1, 1, 1, false};
  m.placement.place = {ctx.rank(), tp_rank, pp_rank, 0, 0};
  m.placement.world = &ctx.world();
  m.placement.sharding = {vocab, true, false, tp_rank, tp};
  return m;
}

TEST(Reshard, RoundTripsAreExact) {
  at::set_num_threads(1);
  const std::string dir = FreshDir("reshard_roundtrip");
  // TP=2 x PP=2 saves the TP=1 weights drawn from kSeed (each rank its shard of its stage).
  RunMultiProcess(
      4,
      [&](DistributedContext& ctx) {
        RankModel m = BuildRankModel(ctx, /*pp=*/2, kVocab, kSeed);
        absl::Status s = models::SaveGptCheckpoint(dir + "/tp2pp2", 5, "recipe", m.named, SyntheticState(m.named),
                                                   tensor_parallel::GetRngState(), m.placement);
        ASSERT_TRUE(s.ok()) << s;
      },
      JobOptions());
  // One process reads it whole: the TP=1 model from kSeed, bit for bit, and nothing else.
  tensor_parallel::ManualSeed(kSeed);
  auto reference = models::GPTModel::Create(LlamaLike(kVocab));
  ASSERT_TRUE(reference.ok());
  const auto named = (*reference)->NamedParameters();
  {
    auto whole = checkpointing::LoadCheckpoint(dir + "/tp2pp2", 5);
    ASSERT_TRUE(whole.ok()) << whole.status();
    ASSERT_EQ(whole->model.size(), named.size());
    const auto state = SyntheticState(named);
    ASSERT_EQ(whole->optimizer.size(), state.size());
    for (const auto& [name, p] : named) {
      ASSERT_TRUE(whole->model.count(name)) << name;
      EXPECT_TRUE(whole->model.at(name).equal(p.detach())) << name;
    }
    for (const auto& [name, t] : state) EXPECT_TRUE(whole->optimizer.at(name).equal(t)) << name;
    auto reader = CheckpointReader::Open(dir + "/tp2pp2", 5);
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ(reader->layout().tp, 2);
    EXPECT_EQ(reader->layout().pp, 2);
  }

  // One process saves other weights at TP=1; TP=2 and TP=4 (302 = 4 x 76 - 2 rows) load their slices.
  tensor_parallel::ManualSeed(kSeed + 1);
  auto other = models::GPTModel::Create(LlamaLike(kVocab));
  ASSERT_TRUE(other.ok());
  const auto other_named = (*other)->NamedParameters();
  GptCheckpointPlacement single;
  single.sharding = {kVocab, true, false, 0, 1};
  ASSERT_TRUE(models::SaveGptCheckpoint(dir + "/tp1", 9, "recipe", other_named, SyntheticState(other_named),
                                        tensor_parallel::GetRngState(), single)
                  .ok());
  const std::map<std::string, at::Tensor> full(other_named.begin(), other_named.end());
  const std::map<std::string, at::Tensor> full_state = SyntheticState(other_named);
  for (int tp : {2, 4}) {
    SCOPED_TRACE("TP=" + std::to_string(tp));
    RunMultiProcess(
        tp,
        [&](DistributedContext& ctx) {
          RankModel m = BuildRankModel(ctx, /*pp=*/1, kVocab, kSeed + 7);
          std::map<std::string, at::Tensor> state = SyntheticState(m.named);  // overwritten by the load
          auto reader = CheckpointReader::Open(dir + "/tp1", 9);
          ASSERT_TRUE(reader.ok()) << reader.status();
          auto loaded = models::LoadGptCheckpoint(*reader, m.named, &state, m.placement, transformer::LoadMode::kStrict);
          ASSERT_TRUE(loaded.ok()) << loaded.status();
          EXPECT_FALSE(loaded->rng.has_value());  // saved at TP=1: generator states do not apply
          const int r = m.placement.place.tp;
          for (const auto& [name, p] : m.named) {
            ExpectSlice(p.detach(), Slice(name, full.at(name).detach(), r, tp), name);
            for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
              ExpectSlice(state.at(kind + name), Slice(name, full_state.at(kind + name), r, tp), kind + name);
            }
          }
          EXPECT_EQ(state.at("step").item<int64_t>(), 5);
        },
        JobOptions());
  }

  // A truncated shard: one error naming the file.
  const std::string shard = checkpointing::IterationDirectory(dir + "/tp2pp2", 5) + "/model-00003-of-00004.safetensors";
  ASSERT_TRUE(fs::exists(shard));
  fs::resize_file(shard, fs::file_size(shard) - 5);
  auto truncated = checkpointing::LoadCheckpoint(dir + "/tp2pp2", 5);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find(shard), std::string::npos) << truncated.status();
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos) << truncated.status();
}

TEST(Reshard, DistributedOptimizerStateLoadsIntoPlainAdamW) {
  at::set_num_threads(1);
  const std::string dir = FreshDir("reshard_distopt");
  const optimizer::AdamWConfig config{0.9, 0.95, 1e-8, 0.1, false};
  // Deterministic "gradients" of each parameter.
  auto grad_of = [](const at::Tensor& p) { return at::sin(p.detach() * 37.0); };
  RunMultiProcess(
      2,
      [&](DistributedContext& ctx) {
        tensor_parallel::ManualSeed(kSeed);
        auto model = models::GPTModel::Create(LlamaLike(kVocab));
        ASSERT_TRUE(model.ok());
        const auto named = (*model)->NamedParameters();
        auto ddp = distributed::DataParallelGrads::Create(named, &ctx.world(), {3000});  // several buckets
        ASSERT_TRUE(ddp.ok()) << ddp.status();
        optimizer::DistributedAdamW adam(**ddp, config);
        for (int step = 0; step < 2; ++step) {
          (*ddp)->StartIteration(1);
          for (const auto& [name, p] : named) p.grad().copy_(grad_of(p));
          ASSERT_TRUE((*ddp)->FinishIteration().ok());  // (g + g) / 2 == g
          ASSERT_TRUE(adam.Step(1e-2).ok());
        }
        auto state = adam.StateDict();
        ASSERT_TRUE(state.ok()) << state.status();
        GptCheckpointPlacement placement;
        placement.layout = {2, 1, 1, 1, 1, 2, true};
        placement.place = {ctx.rank(), 0, 0, 0, ctx.rank()};
        placement.world = &ctx.world();
        placement.sharding = {kVocab, true, false, 0, 1};
        ASSERT_TRUE(models::SaveGptCheckpoint(dir, 2, "", named, *state, {}, placement).ok());
      },
      JobOptions());
  // The same two steps by one process's AdamW.
  tensor_parallel::ManualSeed(kSeed);
  auto model = models::GPTModel::Create(LlamaLike(kVocab));
  ASSERT_TRUE(model.ok());
  const auto named = (*model)->NamedParameters();
  optimizer::AdamW reference(named, config);
  for (int step = 0; step < 2; ++step) {
    for (const auto& [name, p] : named) p.mutable_grad() = grad_of(p);
    reference.Step(1e-2);
  }
  // A fresh model and AdamW load the DP=2 checkpoint.
  tensor_parallel::ManualSeed(kSeed + 3);
  auto fresh = models::GPTModel::Create(LlamaLike(kVocab));
  const auto fresh_named = (*fresh)->NamedParameters();
  optimizer::AdamW adam(fresh_named, config);
  std::map<std::string, at::Tensor> state = adam.StateDict();
  auto reader = CheckpointReader::Open(dir, 2);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE(reader->layout().distributed_optimizer);
  GptCheckpointPlacement single;
  single.sharding = {kVocab, true, false, 0, 1};
  auto loaded = models::LoadGptCheckpoint(*reader, fresh_named, &state, single, transformer::LoadMode::kStrict);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(adam.LoadStateDict(state).ok());
  const auto expected = reference.StateDict(), got = adam.StateDict();
  ASSERT_EQ(expected.size(), got.size());
  for (const auto& [name, t] : expected) EXPECT_TRUE(got.at(name).equal(t)) << name;
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_TRUE(fresh_named[i].second.equal(named[i].second)) << named[i].first;
  }
}

// Dropout off, fp32, an active clip; 4 layers so that PP=2 x VP=2 fits.
proto::PretrainRecipe TinyRecipe(const std::string& dir) {
  const std::string text = R"pb(
    name: "tiny"
    model { num_layers: 4 hidden_size: 32 num_attention_heads: 4 num_query_groups: 2 ffn_hidden_size: 64
            max_position_embeddings: 32 hidden_dropout: 0 attention_dropout: 0 make_vocab_size_divisible_by: 8 }
    data { format: "jsonl" tokenizer_vocab_size: 300 seq_length: 16 split: "90,10,0" }
    training { micro_batch_size: 2 global_batch_size: 8 train_iters: 4 eval_interval: 2 eval_iters: 2
               num_threads: 1 }
    optimizer { lr: 1e-2 min_lr: 1e-3 lr_warmup_iters: 2 clip_grad: 0.3 }
    sample { max_new_tokens: 0 }
  )pb";
  return testing::RecipeOnTinyCorpus(dir, text);
}

struct Layout {
  const char* name;
  int world, tp, pp, vp;
  bool distributed_optimizer;
  int cp = 1;
};

// Runs PretrainGpt at `layout` (in this process for a world of 1) and returns the start iteration followed by the
// train losses (written by rank 0 of a multi-process run into `out`).
std::vector<double> RunAt(const Layout& layout, const proto::PretrainRecipe& recipe, const std::string& out) {
  proto::PretrainRecipe r = recipe;
  r.mutable_parallel()->set_tensor_model_parallel_size(layout.tp);
  r.mutable_parallel()->set_pipeline_model_parallel_size(layout.pp);
  r.mutable_parallel()->set_virtual_pipeline_model_parallel_size(layout.vp);
  r.mutable_parallel()->set_use_distributed_optimizer(layout.distributed_optimizer);
  r.mutable_parallel()->set_context_parallel_size(layout.cp);
  r.mutable_parallel()->set_ddp_bucket_size(3000);
  auto record = [&](const PretrainResult& result) {
    std::string text = absl::StrCat(result.start_iteration);
    for (double l : result.train_losses) absl::StrAppend(&text, " ", absl::StrFormat("%.17g", l));
    ASSERT_TRUE(utils::WriteFileAtomically(out, text).ok());
  };
  if (layout.world == 1) {
    absl::StatusOr<PretrainResult> run = PretrainGpt(r, Quiet());
    EXPECT_TRUE(run.ok()) << layout.name << ": " << run.status();
    if (run.ok()) record(*run);
  } else {
    RunMultiProcess(
        layout.world,
        [&](DistributedContext& ctx) {
          PretrainOptions options = Quiet();
          options.distributed = &ctx;
          absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
          ASSERT_TRUE(run.ok()) << layout.name << ": " << run.status();
          if (ctx.rank() == 0) record(*run);
        },
        JobOptions());
  }
  std::vector<double> values;
  absl::StatusOr<std::string> text = utils::ReadFile(out);
  if (!text.ok()) return values;
  for (absl::string_view v : absl::StrSplit(*text, ' ', absl::SkipEmpty())) values.push_back(std::stod(std::string(v)));
  return values;
}

TEST(Reshard, ResumingAtAnotherLayoutContinuesTheRun) {
  at::set_num_threads(1);
  const std::string dir = FreshDir("reshard_resume");
  const proto::PretrainRecipe recipe = TinyRecipe(dir);
  const Layout single{"TP=1", 1, 1, 1, 1, false};
  const Layout tp2pp2{"TP=2 x PP=2", 4, 2, 2, 1, false};
  const Layout dp2_dist{"DP=2 distributed optimizer", 2, 1, 1, 1, true};
  const Layout pp2vp2{"PP=2 x VP=2", 2, 1, 2, 2, false};
  const Layout tp2dp2_dist{"TP=2 x DP=2 distributed optimizer", 4, 2, 1, 1, true};
  const Layout cp2dp2_dist{"CP=2 x DP=2 distributed optimizer", 4, 1, 1, 1, true, 2};
  const Layout tp2{"TP=2", 2, 2, 1, 1, false};
  const int k = 2, n = recipe.training().train_iters();
  int index = 0;
  for (const auto& [a, b] : std::vector<std::pair<Layout, Layout>>{
           {tp2pp2, single}, {dp2_dist, pp2vp2}, {single, tp2dp2_dist}, {cp2dp2_dist, tp2}}) {
    const std::string name = absl::StrCat(a.name, " -> ", b.name);
    SCOPED_TRACE(name);
    const std::string ckpt = absl::StrCat(dir, "/ckpt", index++);
    proto::PretrainRecipe base = recipe;
    if (a.cp > 1 || b.cp > 1) base.mutable_model()->set_position_embedding_type(proto::ROPE);  // CP needs RoPE
    const std::vector<double> full = RunAt(a, base, dir + "/full.txt");
    ASSERT_EQ(full.size(), 1u + n);
    proto::PretrainRecipe r = base;
    r.mutable_checkpoint()->set_save(ckpt);
    r.mutable_training()->set_exit_after_iters(k);
    const std::vector<double> first = RunAt(a, r, dir + "/first.txt");
    ASSERT_EQ(first.size(), 1u + k);
    for (int i = 1; i <= k; ++i) EXPECT_EQ(first[i], full[i]) << "iteration " << i;
    r.mutable_training()->set_exit_after_iters(0);
    const std::vector<double> second = RunAt(b, r, dir + "/second.txt");
    ASSERT_EQ(second.size(), 1u + n - k);
    EXPECT_EQ(second[0], k);  // resumed
    for (int i = 1; i <= n - k; ++i) {
      EXPECT_LE(std::abs(second[i] - full[k + i]), 1e-5 * std::abs(full[k + i]))
          << "iteration " << k + i << ": " << second[i] << " vs " << full[k + i];
    }
  }
}

TEST(Reshard, StrictLoadOfAnotherModelListsTheDifferencesAndNonStrictProceeds) {
  at::set_num_threads(1);
  const std::string dir = FreshDir("reshard_strict");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_training()->set_train_iters(1);
  recipe.mutable_checkpoint()->set_save(dir + "/ckpt");
  ASSERT_TRUE(PretrainGpt(recipe, Quiet()).ok());
  // Five layers instead of four, a larger MLP: layer 4 is missing, the MLP weights are mis-shaped.
  recipe.mutable_model()->set_num_layers(5);
  recipe.mutable_model()->set_ffn_hidden_size(96);
  recipe.mutable_training()->set_train_iters(2);
  recipe.mutable_checkpoint()->set_save(dir + "/ckpt2");
  recipe.mutable_checkpoint()->set_load(dir + "/ckpt");
  recipe.mutable_checkpoint()->set_finetune(true);
  auto strict = PretrainGpt(recipe, Quiet());
  ASSERT_FALSE(strict.ok());
  const std::string message(strict.status().message());
  EXPECT_NE(message.find("missing from the checkpoint: decoder.layers.4.self_attention.linear_qkv.weight"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("shape mismatch: decoder.layers.0.mlp.linear_fc1.weight: the model expects [96, 32], "
                         "the checkpoint has [64, 32]"),
            std::string::npos)
      << message;
  recipe.mutable_checkpoint()->set_strict(false);
  auto lenient = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  EXPECT_EQ(lenient->train_losses.size(), 2u);
}

TEST(Reshard, ParallelRunsSampleFromTheirFinalCheckpoint) {
  at::set_num_threads(1);
  const std::string dir = FreshDir("reshard_sample");
  proto::PretrainRecipe recipe = TinyRecipe(dir);
  recipe.mutable_training()->set_train_iters(1);
  recipe.mutable_training()->set_eval_iters(0);
  recipe.mutable_checkpoint()->set_save(dir + "/ckpt");
  recipe.mutable_sample()->set_max_new_tokens(6);
  recipe.mutable_sample()->set_greedy(true);
  RunMultiProcess(
      2,
      [&](DistributedContext& ctx) {
        proto::PretrainRecipe r = recipe;
        r.mutable_parallel()->set_tensor_model_parallel_size(2);
        PretrainOptions options = Quiet();
        options.distributed = &ctx;
        absl::StatusOr<PretrainResult> run = PretrainGpt(r, options);
        ASSERT_TRUE(run.ok()) << run.status();
        if (ctx.rank() == 0) {
          EXPECT_FALSE(run->sample.empty());
          ASSERT_TRUE(utils::WriteFileAtomically(dir + "/sample.txt", run->sample).ok());
        }
      },
      JobOptions());
  // One process resumes at the end (nothing left to train) and samples from the same weights.
  absl::StatusOr<PretrainResult> single = PretrainGpt(recipe, Quiet());
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->start_iteration, 1);
  EXPECT_EQ(single->sample, utils::ReadFile(dir + "/sample.txt").value());
}

}  // namespace
}  // namespace megatron::training
