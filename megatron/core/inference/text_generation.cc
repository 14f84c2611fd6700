#include "megatron/core/inference/text_generation.h"

#include <ATen/CPUGeneratorImpl.h>

namespace megatron::inference {

SamplingParams ToSamplingParams(const proto::SamplingConfig& config,
                                const tokenizers::ByteLevelBPETokenizer& tokenizer) {
  SamplingParams params;
  params.max_new_tokens = config.max_new_tokens();
  params.decoding = config.greedy() ? Decoding::kGreedy : Decoding::kSample;
  params.temperature = config.temperature();
  params.top_k = config.top_k();
  params.top_p = config.top_p();
  params.cache = config.use_kv_cache() ? Cache::kKVCache : Cache::kRecompute;
  params.stop_token = tokenizer.eod_id();
  params.valid_vocab_size = tokenizer.vocab_size();
  return params;
}

std::string GenerateText(models::GPTModel& model, const tokenizers::ByteLevelBPETokenizer& tokenizer,
                         const proto::SamplingConfig& config) {
  const std::vector<int32_t> prompt_ids = tokenizer.Encode(config.prompt());
  std::vector<int64_t> prompt(prompt_ids.begin(), prompt_ids.end());
  if (prompt.empty()) prompt.push_back(tokenizer.eod_id() >= 0 ? tokenizer.eod_id() : 0);
  const std::vector<int64_t> generated =
      Generate(model, prompt, ToSamplingParams(config, tokenizer), at::detail::createCPUGenerator(config.seed()));
  std::vector<int32_t> ids(generated.begin(), generated.end());
  if (!ids.empty() && ids.back() == tokenizer.eod_id()) ids.pop_back();
  return config.prompt() + tokenizer.Decode(ids);
}

}  // namespace megatron::inference
