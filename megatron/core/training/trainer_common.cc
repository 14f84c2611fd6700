#include "megatron/core/training/trainer_common.h"

#include <algorithm>
#include <utility>

#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/recipe.h"

namespace megatron::training {

optimizer::LrSchedule LrScheduleFromRecipe(const proto::OptimizerConfig& o, int train_iters) {
  optimizer::LrSchedule schedule;
  schedule.max_lr = o.lr();
  schedule.min_lr = o.min_lr();
  schedule.warmup_steps = o.lr_warmup_iters();
  schedule.decay_steps = o.lr_decay_iters() > 0 ? o.lr_decay_iters() : std::max(1, train_iters);
  schedule.style = o.lr_decay_style() == proto::COSINE   ? optimizer::LrDecay::kCosine
                   : o.lr_decay_style() == proto::LINEAR ? optimizer::LrDecay::kLinear
                                                         : optimizer::LrDecay::kConstant;
  return schedule;
}

absl::Status SaveTrainingCheckpoint(const std::string& dir, int64_t iteration, const google::protobuf::Message& recipe,
                                    std::map<std::string, at::Tensor> model_state,
                                    std::map<std::string, at::Tensor> optimizer_state) {
  checkpointing::Checkpoint ckpt;
  ckpt.iteration = iteration;
  ckpt.recipe = ToText(recipe);
  ckpt.model = std::move(model_state);
  for (auto& [name, tensor] : ckpt.model) tensor = tensor.to(at::kCPU);
  ckpt.optimizer = std::move(optimizer_state);
  for (auto& [name, tensor] : ckpt.optimizer) tensor = tensor.to(at::kCPU);
  ckpt.rng = tensor_parallel::GetRngState();
  return checkpointing::SaveCheckpoint(dir, ckpt);
}

}  // namespace megatron::training
