#include "experiments/llava/cli.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "megatron/core/datasets/image/image.h"
#include "megatron/core/proto/llava.pb.h"
#include "megatron/core/training/gpt_data.h"
#include "megatron/core/training/llava.h"
#include "megatron/core/training/recipe.h"

namespace megatron::experiments::llava {
namespace {

const char* Name(Mode mode) {
  switch (mode) {
    case Mode::kPretrain: return "pretrain";
    case Mode::kSft: return "sft";
    case Mode::kGenerate: return "generate";
    case Mode::kEval: return "eval";
  }
  return "?";
}

const char* DefaultRecipe(Mode mode) {
  return mode == Mode::kPretrain ? "experiments/llava/recipes/shapes_pretrain.textproto"
                                 : "experiments/llava/recipes/shapes_sft.textproto";
}

constexpr char kUsage[] = R"(usage: %s [--recipe=PATH] [--field.path=value ...]%s

  pretrain  alignment on captions (the shapes recipe trains every part: its towers start random)
  sft       instruction tuning from the pretrain checkpoint (VQA, conversations, captions)
  generate  --image=PATH --prompt=TEXT [--max_new_tokens=N --temperature=T --top_k=K]: answer about an image
  eval      held-out VQA accuracy per question type (vs chance) and captions, as a table
Default recipe: %s (schema: megatron/core/proto/llava.proto). Every field can be overridden, e.g.
  --training.train_iters=50 --training.device=cuda --training.precision=BF16
)";

}  // namespace

int Run(Mode mode, int argc, char** argv) {
  const char* name = Name(mode);
  auto command_line = training::ParseCommandLine(
      argc, argv, {"image", "prompt", "max_new_tokens", "temperature", "top_k", "max_samples"});
  if (!command_line.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(command_line.status().message()).c_str());
    return 2;
  }
  if (command_line->help) {
    std::printf(kUsage, name, mode == Mode::kGenerate ? " --image=PATH --prompt=TEXT" : "", DefaultRecipe(mode));
    return 0;
  }
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  const std::string base_dir = workspace != nullptr ? workspace : ".";
  if (command_line->recipe.empty()) {
    command_line->recipe = DefaultRecipe(mode);
  } else if (command_line->recipe[0] != '/') {
    command_line->recipe = base_dir + "/" + command_line->recipe;
  }
  proto::LlavaRecipe recipe;
  if (absl::Status s = training::BuildRecipe(*command_line, &recipe); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(s.message()).c_str());
    return 2;
  }
  std::string image_path, prompt;
  training::LlavaGenerateOptions generate;
  int max_samples = recipe.eval().max_samples();
  generate.max_new_tokens = recipe.eval().max_new_tokens();
  for (const auto& [key, value] : command_line->reserved) {
    bool ok = true;
    if (key == "image") image_path = value;
    else if (key == "prompt") prompt = value;
    else if (key == "max_new_tokens") ok = absl::SimpleAtoi(value, &generate.max_new_tokens);
    else if (key == "top_k") ok = absl::SimpleAtoi(value, &generate.top_k);
    else if (key == "max_samples") ok = absl::SimpleAtoi(value, &max_samples);
    else if (key == "temperature") {
      ok = absl::SimpleAtod(value, &generate.temperature) && generate.temperature > 0;
      generate.greedy = false;
    }
    if (!ok) {
      std::fprintf(stderr, "%s: --%s=%s is not a valid value\n", name, key.c_str(), value.c_str());
      return 2;
    }
  }
  if (generate.top_k > 0) generate.greedy = false;
  std::fprintf(stderr, "%s: recipe %s\n", name, command_line->recipe.c_str());
  training::LlavaRunOptions options;
  options.base_dir = base_dir;

  if (mode == Mode::kPretrain || mode == Mode::kSft) {
    auto result = training::TrainLlava(recipe, options);
    if (!result.ok()) {
      std::fprintf(stderr, "%s: %s\n", name, std::string(result.status().message()).c_str());
      return 1;
    }
    if (!result->valid_losses.empty()) {
      const double first = result->valid_losses.front().second, last = result->valid_losses.back().second;
      std::printf("validation loss: %.4f (iteration %lld) -> %.4f (iteration %lld), %.1f%% lower\n", first,
                  static_cast<long long>(result->valid_losses.front().first), last,
                  static_cast<long long>(result->valid_losses.back().first), 100.0 * (first - last) / first);
    }
    std::printf("throughput: %.1f samples/s, %.0f tokens/s (text + image embeddings)\n", result->samples_per_second,
                result->tokens_per_second);
    return 0;
  }
  auto loaded = training::LoadLlava(recipe, options);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(loaded.status().message()).c_str());
    return 1;
  }
  if (mode == Mode::kGenerate) {
    if (image_path.empty() || prompt.empty()) {
      std::fprintf(stderr, "%s: --image=PATH and --prompt=TEXT are required\n", name);
      return 2;
    }
    auto image = datasets::image::ReadImageFile(training::ResolvePath(base_dir, image_path));
    if (!image.ok()) {
      std::fprintf(stderr, "%s: %s\n", name, std::string(image.status().message()).c_str());
      return 1;
    }
    std::printf("%s\n", training::GenerateLlava(*loaded, *image, prompt, generate).c_str());
    return 0;
  }
  auto eval = training::EvalLlava(*loaded, max_samples, generate.max_new_tokens, /*show_progress=*/true);
  if (!eval.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(eval.status().message()).c_str());
    return 1;
  }
  std::printf("held-out evaluation (checkpoint iteration %lld):\n%s", static_cast<long long>(loaded->iteration),
              eval->table.c_str());
  return 0;
}

}  // namespace megatron::experiments::llava
