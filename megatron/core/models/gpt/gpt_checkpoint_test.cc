// GPT parameter shards (Note [GPT parameter shards]) and single-process saving/loading: a TP=1 checkpoint loaded
// by simulated TP=2 and TP=4 ranks (a vocabulary of 302 rows that 4 does not divide) gives each rank exactly its
// slice, cut here by independent code; strict loading lists missing, unexpected and mis-shaped tensors.
// Multi-process saving at other layouts: tests/gpt_pretrain/reshard_test.cc.
#include "megatron/core/models/gpt/gpt_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/randn_like.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::models {
namespace {

using checkpointing::CheckpointReader;

constexpr int64_t kVocab = 302;  // not divisible by 4

transformer::TransformerConfig LlamaLike() {
  transformer::TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 8;
  c.num_query_groups = 4;
  c.kv_channels = 4;
  c.ffn_hidden_size = 24;
  c.max_position_embeddings = 16;
  c.vocab_size = kVocab;
  c.normalization = transformer::Normalization::kRMSNorm;
  c.activation = transformer::Activation::kSwiGLU;
  c.position_embedding_type = transformer::PositionEmbedding::kRope;
  c.share_embeddings_and_output_weights = false;
  c.add_bias_linear = true;
  return c;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// Rank r's slice of the TP=1 tensor `full`, cut the way the layers shard (independently of GptParameterShard);
// vocabulary rows past the end come back as NaN.
at::Tensor Slice(const std::string& name, const at::Tensor& full, int r, int tp) {
  const auto ends = [&](const char* s) { return absl::EndsWith(name, s); };
  if (ends("linear_fc1.weight") || ends("linear_fc1.bias")) {  // [gate; up] -> [gate_r; up_r]
    const int64_t f = full.size(0) / 2, c = f / tp;
    return at::cat({full.narrow(0, r * c, c), full.narrow(0, f + r * c, c)});
  }
  if (ends("linear_qkv.weight") || ends("linear_qkv.bias")) return full.chunk(tp, 0)[r];
  if (ends("linear_proj.weight") || ends("linear_fc2.weight")) return full.chunk(tp, 1)[r];
  if (ends("word_embeddings.weight") || ends("output_layer.weight")) {
    const int64_t padded = (full.size(0) + tp - 1) / tp * tp, n = padded / tp;
    at::Tensor out = at::full({n, full.size(1)}, std::numeric_limits<float>::quiet_NaN());
    const int64_t rows = std::max<int64_t>(0, std::min(n, full.size(0) - r * n));
    if (rows > 0) out.narrow(0, 0, rows).copy_(full.narrow(0, r * n, rows));
    return out;
  }
  return full;
}

void ExpectSameIncludingNaN(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(at::isnan(a).equal(at::isnan(b))) << what;
  EXPECT_TRUE(a.nan_to_num(0).equal(b.nan_to_num(0))) << what;
}

TEST(GptParameterShard, EveryKindOfParameter) {
  GptShardingInfo info{kVocab, /*gated_mlp=*/true, /*tied=*/false, /*tp_rank=*/1, /*tp_size=*/4};
  // Column: rows [r n, (r+1) n).
  auto qkv = GptParameterShard("decoder.layers.3.self_attention.linear_qkv.weight", {16, 32}, info);
  ASSERT_TRUE(qkv.ok()) << qkv.status();
  EXPECT_EQ(qkv->global_shape, (std::vector<int64_t>{64, 32}));
  ASSERT_EQ(qkv->pieces.size(), 1u);
  EXPECT_EQ(qkv->pieces[0].global_offsets, (std::vector<int64_t>{16, 0}));
  EXPECT_FALSE(qkv->tp_replicated);
  // Gated fc1: [gate_r; up_r] -> two pieces, in the gate block and in the up block.
  auto fc1 = GptParameterShard("decoder.layers.0.mlp.linear_fc1.weight", {12, 32}, info);
  ASSERT_TRUE(fc1.ok());
  EXPECT_EQ(fc1->global_shape, (std::vector<int64_t>{48, 32}));
  ASSERT_EQ(fc1->pieces.size(), 2u);
  EXPECT_EQ(fc1->pieces[0].local_offsets, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(fc1->pieces[0].global_offsets, (std::vector<int64_t>{6, 0}));
  EXPECT_EQ(fc1->pieces[1].local_offsets, (std::vector<int64_t>{6, 0}));
  EXPECT_EQ(fc1->pieces[1].global_offsets, (std::vector<int64_t>{30, 0}));
  EXPECT_EQ(fc1->pieces[1].shape, (std::vector<int64_t>{6, 32}));
  // Row: columns.
  auto fc2 = GptParameterShard("decoder.layers.0.mlp.linear_fc2.weight", {32, 6}, info);
  ASSERT_TRUE(fc2.ok());
  EXPECT_EQ(fc2->global_shape, (std::vector<int64_t>{32, 24}));
  EXPECT_EQ(fc2->pieces[0].global_offsets, (std::vector<int64_t>{0, 6}));
  // Row-parallel bias and norms: whole, replicated.
  auto bias = GptParameterShard("decoder.layers.0.mlp.linear_fc2.bias", {32}, info);
  ASSERT_TRUE(bias.ok());
  EXPECT_TRUE(bias->tp_replicated);
  EXPECT_EQ(bias->global_shape, (std::vector<int64_t>{32}));
  // Vocabulary: 302 rows over 4 x 76; the last rank holds 74 real rows and 2 padding rows.
  info.tp_rank = 3;
  auto emb = GptParameterShard("embedding.word_embeddings.weight", {76, 32}, info);
  ASSERT_TRUE(emb.ok());
  EXPECT_EQ(emb->global_shape, (std::vector<int64_t>{302, 32}));
  ASSERT_EQ(emb->pieces.size(), 1u);
  EXPECT_EQ(emb->pieces[0].global_offsets, (std::vector<int64_t>{228, 0}));
  EXPECT_EQ(emb->pieces[0].shape, (std::vector<int64_t>{74, 32}));
  // A tied copy reads the word embeddings and is never written.
  info.tied_embeddings = true;
  auto tied = GptParameterShard("output_layer.weight", {76, 32}, info);
  ASSERT_TRUE(tied.ok());
  EXPECT_TRUE(tied->tied_copy);
  EXPECT_EQ(tied->global_name, "embedding.word_embeddings.weight");
  // Impossible: more vocabulary than rows.
  info.vocab_size = 400;
  EXPECT_FALSE(GptParameterShard("embedding.word_embeddings.weight", {76, 32}, info).ok());
}

TEST(GptCheckpoint, TensorParallelRanksLoadTheirSlicesOfATp1Checkpoint) {
  const std::string dir = FreshDir("gpt_ckpt_slices");
  auto model = GPTModel::Create(LlamaLike());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto named = (*model)->NamedParameters();
  std::map<std::string, at::Tensor> state;  // AdamW-like state with distinct values
  for (const auto& [name, p] : named) {
    state["exp_avg." + name] = at::randn_like(p.detach());
    state["exp_avg_sq." + name] = at::randn_like(p.detach()).abs();
  }
  state["step"] = at::scalar_tensor(7, at::kLong);
  GptCheckpointPlacement single;
  single.sharding = {kVocab, true, false, 0, 1};
  ASSERT_TRUE(SaveGptCheckpoint(dir, 7, "recipe", named, state, {}, single).ok());

  for (int tp : {2, 4}) {
    for (int r = 0; r < tp; ++r) {
      SCOPED_TRACE("TP=" + std::to_string(tp) + " rank " + std::to_string(r));
      // What rank r of a TP run holds, NaN until loaded.
      std::vector<std::pair<std::string, at::Tensor>> local;
      std::map<std::string, at::Tensor> local_state;
      for (const auto& [name, p] : named) {
        local.emplace_back(name, at::full_like(Slice(name, p.detach(), r, tp), NAN));
        for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
          local_state[kind + name] = at::full_like(local.back().second, NAN);
        }
      }
      local_state["step"] = at::scalar_tensor(0, at::kLong);
      GptCheckpointPlacement placement;
      placement.sharding = {kVocab, true, false, r, tp};
      placement.layout.tp = tp;
      placement.place.tp = r;
      auto reader = CheckpointReader::Open(dir, 7);
      ASSERT_TRUE(reader.ok()) << reader.status();
      auto loaded = LoadGptCheckpoint(*reader, local, &local_state, placement, transformer::LoadMode::kStrict);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      EXPECT_TRUE(loaded->report.empty()) << loaded->report.ToString();
      for (size_t i = 0; i < named.size(); ++i) {
        const std::string& name = named[i].first;
        ExpectSameIncludingNaN(local[i].second, Slice(name, named[i].second.detach(), r, tp), name);
        for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
          ExpectSameIncludingNaN(local_state.at(kind + name), Slice(name, state.at(kind + name), r, tp),
                                 kind + name);
        }
      }
      EXPECT_EQ(local_state.at("step").item<int64_t>(), 7);
    }
  }
}

TEST(GptCheckpoint, StrictLoadingListsEveryProblemAndNonStrictLoadsTheRest) {
  const std::string dir = FreshDir("gpt_ckpt_strict");
  auto model = GPTModel::Create(LlamaLike());
  ASSERT_TRUE(model.ok());
  const auto named = (*model)->NamedParameters();
  GptCheckpointPlacement single;
  single.sharding = {kVocab, true, false, 0, 1};
  ASSERT_TRUE(SaveGptCheckpoint(dir, 1, "", named, {}, {}, single).ok());

  // A model that lacks one saved tensor, has one the checkpoint lacks, and one of another shape.
  std::vector<std::pair<std::string, at::Tensor>> other;
  const std::string dropped = "decoder.layers.1.mlp.linear_fc2.bias";
  const std::string reshaped = "decoder.final_layernorm.weight";
  for (const auto& [name, p] : named) {
    if (name == dropped) continue;
    other.emplace_back(name, name == reshaped ? at::zeros({48}) : at::zeros_like(p.detach()));
  }
  other.emplace_back("decoder.layers.2.mlp.linear_fc2.bias", at::zeros({32}));
  auto reader = CheckpointReader::Open(dir, 1);
  ASSERT_TRUE(reader.ok());
  auto strict = LoadGptCheckpoint(*reader, other, nullptr, single, transformer::LoadMode::kStrict);
  ASSERT_FALSE(strict.ok());
  const std::string message(strict.status().message());
  EXPECT_NE(message.find("missing from the checkpoint: decoder.layers.2.mlp.linear_fc2.bias"), std::string::npos)
      << message;
  EXPECT_NE(message.find("unexpected (not in the model): " + dropped), std::string::npos) << message;
  EXPECT_NE(message.find("shape mismatch: " + reshaped + ": the model expects [48], the checkpoint has [32]"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("checkpoint.strict=false"), std::string::npos) << message;
  for (const auto& [name, t] : other) EXPECT_EQ(t.abs().sum().item<double>(), 0.0) << name << " changed";

  auto lenient = LoadGptCheckpoint(*reader, other, nullptr, single, transformer::LoadMode::kNonStrict);
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  EXPECT_EQ(lenient->report.missing, std::vector<std::string>{"decoder.layers.2.mlp.linear_fc2.bias"});
  EXPECT_EQ(lenient->report.unexpected, std::vector<std::string>{dropped});
  ASSERT_EQ(lenient->report.mismatched.size(), 1u);
  EXPECT_EQ(lenient->report.mismatched[0].name, reshaped);
  std::map<std::string, at::Tensor> original(named.begin(), named.end());
  for (const auto& [name, t] : other) {
    if (name == reshaped || !original.count(name)) {
      EXPECT_EQ(t.abs().sum().item<double>(), 0.0) << name;
    } else {
      EXPECT_TRUE(t.equal(original.at(name).detach())) << name;
    }
  }
}

}  // namespace
}  // namespace megatron::models
