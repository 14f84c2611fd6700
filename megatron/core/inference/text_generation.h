// Text in, text out: a recipe's SamplingConfig applied to a GPT model and its tokenizer. Used by the sample at
// the end of pretraining and by `bazel run //experiments/gpt:generate`.
#pragma once

#include <string>

#include "megatron/core/inference/generate.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"

namespace megatron::inference {

// The decoding settings of `config`; stops at the tokenizer's EOD and never emits vocabulary padding.
SamplingParams ToSamplingParams(const proto::SamplingConfig& config,
                                const tokenizers::ByteLevelBPETokenizer& tokenizer);

// The prompt followed by the generated continuation (EOD dropped). An empty prompt starts from EOD.
std::string GenerateText(models::GPTModel& model, const tokenizers::ByteLevelBPETokenizer& tokenizer,
                         const proto::SamplingConfig& config);

}  // namespace megatron::inference
