// Pieces every training loop here shares (pretrain_gpt, pretrain_masked_lm, llava): the learning-rate schedule a
// recipe's optimizer section describes, and writing one training checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/proto/recipe.pb.h"

namespace google::protobuf {
class Message;
}

namespace megatron::training {

// Warmup + decay from optimizer.{lr, min_lr, lr_warmup_iters, lr_decay_iters, lr_decay_style}; the decay spans
// lr_decay_iters, or train_iters when that is 0.
optimizer::LrSchedule LrScheduleFromRecipe(const proto::OptimizerConfig& o, int train_iters);

// Writes checkpoint `iteration` into `dir` atomically (checkpointing::SaveCheckpoint): the model and optimizer
// state copied to the CPU, the recipe as text and the RNG state.
absl::Status SaveTrainingCheckpoint(const std::string& dir, int64_t iteration, const google::protobuf::Message& recipe,
                                    std::map<std::string, at::Tensor> model_state,
                                    std::map<std::string, at::Tensor> optimizer_state);

}  // namespace megatron::training
