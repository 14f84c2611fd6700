#include "megatron/core/inference/generate.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/where.h>

#include <limits>

namespace megatron::inference {

int64_t SampleToken(const at::Tensor& logits_in, const SamplingParams& params, at::Generator generator) {
  at::Tensor logits = logits_in.to(at::kFloat);
  if (params.valid_vocab_size > 0 && params.valid_vocab_size < logits.size(0)) {
    logits = logits.slice(0, 0, params.valid_vocab_size);
  }
  if (params.decoding == Decoding::kGreedy) return at::argmax(logits).item<int64_t>();
  TORCH_CHECK(params.temperature > 0, "SampleToken: temperature must be positive, got ", params.temperature);
  logits = logits / params.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (params.top_k > 0 && params.top_k < logits.size(0)) {
    const at::Tensor kth = std::get<0>(at::topk(logits, params.top_k)).select(0, params.top_k - 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (params.top_p > 0.0 && params.top_p < 1.0) {
    auto [sorted, order] = at::sort(logits, /*dim=*/0, /*descending=*/true);
    const at::Tensor cumulative = at::cumsum(at::softmax(sorted, 0), 0);
    // Drop a token when the tokens ranked above it already reach top_p (the best token always stays).
    at::Tensor drop_sorted = (cumulative - at::softmax(sorted, 0)) >= params.top_p;
    at::Tensor drop = at::full_like(drop_sorted, false).scatter(0, order, drop_sorted);
    logits = logits.masked_fill(drop, neg_inf);
  }
  const at::Tensor probs = at::softmax(logits, 0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> Generate(models::GPTModel& model, const std::vector<int64_t>& prompt,
                              const SamplingParams& params, at::Generator generator) {
  TORCH_CHECK(!prompt.empty(), "Generate: the prompt must hold at least one token");
  const bool was_training = model.training();
  model.SetTraining(false);
  at::NoGradGuard no_grad;
  const auto device = model.Parameters().front().device();
  const int64_t max_len = model.config().max_position_embeddings;
  std::vector<int64_t> sequence = prompt;
  std::vector<int64_t> generated;
  transformer::KVCache cache(model.config().num_layers);
  for (int step = 0; step < params.max_new_tokens; ++step) {
    at::Tensor logits;
    if (params.cache == Cache::kKVCache) {
      if (static_cast<int64_t>(sequence.size()) >= max_len) break;  // the cache cannot slide
      const std::vector<int64_t> fresh(sequence.begin() + cache.seq_len, sequence.end());
      at::Tensor ids = at::tensor(fresh, at::kLong).to(device).unsqueeze(0);
      logits = model.Logits(ids, at::Tensor(), &cache);
    } else {
      // Recompute: the last max_len tokens, positions from 0.
      const size_t start = sequence.size() > static_cast<size_t>(max_len) ? sequence.size() - max_len : 0;
      const std::vector<int64_t> window(sequence.begin() + start, sequence.end());
      logits = model.Logits(at::tensor(window, at::kLong).to(device).unsqueeze(0), at::Tensor(), nullptr);
    }
    const int64_t next = SampleToken(logits[0][-1].to(at::kCPU), params, generator);
    sequence.push_back(next);
    generated.push_back(next);
    if (next == params.stop_token) break;
  }
  model.SetTraining(was_training);
  return generated;
}

}  // namespace megatron::inference
