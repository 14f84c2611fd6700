// Autoregressive text generation for GPT models (Megatron's inference/text_generation, simplified to one
// prompt at a time): greedy, temperature, top-k and top-p (nucleus) sampling, with or without a KV cache.
//
// With the KV cache the prompt is run once (prefill) and each new token costs one position; without it the
// whole sequence is re-run every step. Greedy decoding gives the same tokens either way (tested).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Generator.h>

#include "megatron/core/models/gpt/gpt_model.h"

namespace megatron::inference {

enum class Decoding { kGreedy, kSample };
enum class Cache { kKVCache, kRecompute };

struct SamplingParams {
  int max_new_tokens = 64;
  Decoding decoding = Decoding::kSample;
  double temperature = 1.0;
  int top_k = 0;        // 0: off
  double top_p = 0.0;   // 0: off
  Cache cache = Cache::kKVCache;
  int64_t stop_token = -1;        // e.g. the EOD id; generation ends after emitting it
  int64_t valid_vocab_size = -1;  // ids >= this (vocabulary padding) are never produced; -1: all
};

// Returns only the new tokens. The model is put in eval mode for the call and restored afterwards.
std::vector<int64_t> Generate(models::GPTModel& model, const std::vector<int64_t>& prompt,
                              const SamplingParams& params, at::Generator generator);

// Picks the next token from logits [V] (fp32) as `params` says. Exposed for tests.
int64_t SampleToken(const at::Tensor& logits, const SamplingParams& params, at::Generator generator);

}  // namespace megatron::inference
