// bazel run //experiments/gpt:pretrain [-- --recipe=PATH] [--field.path=value ...]
//
// Pretrains a core GPT model from a recipe (default: recipes/fortunes_tiny.textproto, embedded as data).
// Relative paths in the recipe are resolved against the workspace root under `bazel run`.
//
// Several processes (CPU, Gloo): bazel-bin/tools/launch --nproc_per_node=N -- bazel-bin/experiments/gpt/pretrain
// --parallel.tensor_model_parallel_size=T ... (data-parallel size N/T; WORLD_SIZE > 1 starts the process group).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "megatron/core/distributed/launch_env.h"
#include "megatron/core/distributed/process_group.h"

#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/training/pretrain_gpt.h"
#include "megatron/core/training/recipe.h"

namespace {

constexpr char kDefaultRecipe[] = "experiments/gpt/recipes/fortunes_tiny.textproto";

constexpr char kUsage[] = R"(usage: pretrain [--recipe=PATH] [--field.path=value ...]

Pretrains a GPT model. Every recipe field can be overridden, e.g.
  --training.train_iters=100 --model.num_layers=2 --training.precision=BF16 --training.device=cuda
  --checkpoint.save=runs/x/checkpoints --load_hf=path/to/hf_model
Recipe schema: megatron/core/proto/recipe.proto. Default recipe: )";

}  // namespace

int main(int argc, char** argv) {
  auto command_line = megatron::training::ParseCommandLine(argc, argv);
  if (!command_line.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(command_line.status().message()).c_str());
    return 2;
  }
  if (command_line->help) {
    std::printf("%s%s\n", kUsage, kDefaultRecipe);
    return 0;
  }
  // Under `bazel run` the working directory is the runfiles tree (where the default recipe lives);
  // outputs and user paths are relative to the workspace.
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  const std::string base_dir = workspace != nullptr ? workspace : ".";
  if (command_line->recipe.empty()) {
    command_line->recipe = kDefaultRecipe;
  } else if (command_line->recipe[0] != '/') {
    command_line->recipe = base_dir + "/" + command_line->recipe;
  }
  megatron::proto::PretrainRecipe recipe;
  if (absl::Status s = megatron::training::BuildRecipe(*command_line, &recipe); !s.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (std::getenv("RANK") == nullptr || std::string(std::getenv("RANK")) == "0") {
    std::fprintf(stderr, "pretrain: recipe %s\n", command_line->recipe.c_str());
  }
  megatron::training::PretrainOptions options;
  options.base_dir = base_dir;
  absl::StatusOr<megatron::distributed::LaunchEnv> env = megatron::distributed::LaunchEnv::FromEnvironment();
  if (!env.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(env.status().message()).c_str());
    return 2;
  }
  std::shared_ptr<megatron::distributed::DistributedContext> context;
  if (env->world_size > 1) {
    // CUDA runs: NCCL for GPU tensors (Gloo keeps serving CPU tensors); needs a --config=cuda build.
    const auto backend = recipe.training().device() == "cpu" ? megatron::distributed::Backend::kGloo
                                                             : megatron::distributed::Backend::kNccl;
    // Generous timeout: rank 0 prepares the data (tokenizer training, tokenization) while the others wait.
    auto ctx = megatron::distributed::InitDistributed(*env, backend, absl::Minutes(30));
    if (!ctx.ok()) {
      std::fprintf(stderr, "pretrain: %s\n", std::string(ctx.status().message()).c_str());
      return 1;
    }
    context = *ctx;
    options.distributed = context.get();
  }
  const bool rank0 = env->rank == 0;
  auto result = megatron::training::PretrainGpt(recipe, options);
  if (!result.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  if (!rank0) return 0;
  if (!result->valid_losses.empty()) {
    const double first = result->valid_losses.front().second, last = result->valid_losses.back().second;
    std::printf("validation loss: %.4f (iteration %lld) -> %.4f (iteration %lld), %.1f%% lower\n", first,
                static_cast<long long>(result->valid_losses.front().first), last,
                static_cast<long long>(result->valid_losses.back().first), 100.0 * (first - last) / first);
  }
  std::printf("throughput: %.0f tokens/s over %lld iterations (whole run); steady state %.0f tokens/s = %.2f "
              "model TFLOP/s (%.1fM parameters, %.3g FLOPs/token)\n",
              result->tokens_per_second, static_cast<long long>(result->final_iteration - result->start_iteration),
              result->steady_tokens_per_second, result->steady_tokens_per_second * result->flops_per_token / 1e12,
              result->num_parameters / 1e6, result->flops_per_token);
  if (!result->sample.empty()) std::printf("sample:\n%s\n", result->sample.c_str());
  return 0;
}
