// CPU benchmarks of the vertical slice: tokenizer encoding (bytes/s), one GPT training step and one greedy decode
// step with and without the KV cache (tokens/s). Built by CI (tag "benchmark"), run by hand or by the tracker:
//   bazel run -c opt //benchmarks/cpu:cpu_benchmarks -- --benchmark_repetitions=3
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/randint.h>

#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"

namespace megatron {
namespace {

// The default pretrain recipe's model (experiments/gpt/recipes/fortunes_tiny.textproto).
transformer::TransformerConfig TinyLlama() {
  transformer::TransformerConfig c;
  c.num_layers = 4;
  c.hidden_size = 192;
  c.num_attention_heads = 4;
  c.num_query_groups = 4;
  c.kv_channels = 48;
  c.ffn_hidden_size = 512;
  c.vocab_size = 2048;
  c.max_position_embeddings = 128;
  c.normalization = transformer::Normalization::kRMSNorm;
  c.activation = transformer::Activation::kSwiGLU;
  c.position_embedding_type = transformer::PositionEmbedding::kRope;
  c.add_bias_linear = c.add_qkv_bias = false;
  c.hidden_dropout = c.attention_dropout = 0;
  return c;
}

std::string Text() {
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text += "It's a truth universally acknowledged, that 42 single men in possession of a good fortune "
            "must be in want of a wife; however little known the feelings or views of such a man may be. ";
  }
  return text;
}

void BM_TokenizerEncode(benchmark::State& state) {
  const std::string text = Text();
  tokenizers::BpeTrainerOptions options;
  options.vocab_size = 2048;
  auto tokenizer = tokenizers::ByteLevelBPETokenizer::Train({text}, options);
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer->Encode(text));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_TokenizerEncode)->Unit(benchmark::kMillisecond);

void BM_GptTrainStep(benchmark::State& state) {
  tensor_parallel::ManualSeed(1);
  auto model = models::GPTModel::Create(TinyLlama());
  optimizer::AdamW adam((*model)->NamedParameters(), optimizer::AdamWConfig{});
  const int64_t b = state.range(0), s = 128;
  at::Tensor ids = at::randint(0, 2048, {b, s + 1}, at::kLong);
  at::Tensor tokens = ids.slice(1, 0, s).contiguous(), labels = ids.slice(1, 1, s + 1).contiguous();
  for (auto _ : state) {
    at::Tensor loss = (*model)->Loss(tokens, at::Tensor(), labels).mean();
    loss.backward();
    adam.Step(1e-3);
    adam.ZeroGrad();
    benchmark::DoNotOptimize(loss.item<float>());
  }
  state.SetItemsProcessed(state.iterations() * b * s);  // tokens
  state.counters["threads"] = at::get_num_threads();
}
BENCHMARK(BM_GptTrainStep)->Arg(16)->Unit(benchmark::kMillisecond);

void BM_GptDecodeStep(benchmark::State& state) {
  tensor_parallel::ManualSeed(1);
  auto model = models::GPTModel::Create(TinyLlama());
  (*model)->SetTraining(false);
  at::NoGradGuard no_grad;
  const bool cache = state.range(0) == 1;
  at::Tensor context = at::randint(0, 2048, {1, 96}, at::kLong);
  for (auto _ : state) {
    // One new token after a 96-token context: with the cache only the new position runs.
    if (cache) {
      state.PauseTiming();
      transformer::KVCache kv(4);
      (*model)->Logits(context, at::Tensor(), &kv);
      state.ResumeTiming();
      benchmark::DoNotOptimize((*model)->Logits(context.slice(1, 95, 96), at::Tensor(), &kv));
    } else {
      benchmark::DoNotOptimize((*model)->Logits(context, at::Tensor(), nullptr));
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(cache ? "kv_cache" : "recompute");
}
BENCHMARK(BM_GptDecodeStep)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace megatron

BENCHMARK_MAIN();
