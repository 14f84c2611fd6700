// Combines a language-model checkpoint and a vision-encoder checkpoint into one LLaVA checkpoint (Megatron's
// examples/multimodal/combine_lm_vision_checkpoints.sh + combine_state_dicts.py); see
// megatron/core/training/llava_combine.h for the formats, the checks and what is out of scope.
//
//   bazel run //tools:combine_checkpoints -- --language_model=DIR --vision_model=DIR|HF_DIR --output=DIR
//       [--recipe=experiments/llava/recipes/shapes_pretrain.textproto] [--field.path=value ...]
//
// Then start LLaVA from it:
//   bazel run //experiments/llava:pretrain -- --checkpoint.load=DIR --checkpoint.finetune=true
//       --model.allow_missing_vision_projection_checkpoint=true
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "megatron/core/proto/llava.pb.h"
#include "megatron/core/training/llava.h"
#include "megatron/core/training/llava_combine.h"
#include "megatron/core/training/recipe.h"

namespace {

constexpr char kUsage[] =
    "usage: combine_checkpoints --language_model=DIR --vision_model=DIR --output=DIR [--recipe=PATH] "
    "[--field.path=value ...]\n"
    "  --language_model  our GPT checkpoint directory (its latest iteration)\n"
    "  --vision_model    our vision-encoder (or LLaVA) checkpoint directory, or a HuggingFace CLIP/SigLIP directory\n"
    "  --output          a new directory: iter_0000001 with language_model.* and vision_model.*, no projector\n"
    "  --recipe          the LLaVA recipe whose model the tensors must fit (default "
    "experiments/llava/recipes/shapes_pretrain.textproto); overrides as for pretrain\n";

// `bazel run` executes in the runfiles tree; paths the user typed are relative to the directory they typed them in.
std::string FromUserDirectory(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace megatron;
  auto command_line = training::ParseCommandLine(argc, argv, {"language_model", "vision_model", "output"});
  if (!command_line.ok()) {
    std::fprintf(stderr, "combine_checkpoints: %s\n%s", std::string(command_line.status().message()).c_str(), kUsage);
    return 2;
  }
  if (command_line->help) {
    std::printf("%s", kUsage);
    return 0;
  }
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  const std::string base_dir = workspace != nullptr ? workspace : ".";
  if (command_line->recipe.empty()) {
    command_line->recipe = "experiments/llava/recipes/shapes_pretrain.textproto";
  } else {
    command_line->recipe = FromUserDirectory(command_line->recipe);
  }
  proto::LlavaRecipe recipe;
  if (absl::Status s = training::BuildRecipe(*command_line, &recipe); !s.ok()) {
    std::fprintf(stderr, "combine_checkpoints: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  training::CombineCheckpointsOptions options;
  for (const auto& [key, value] : command_line->reserved) {
    if (key == "language_model") options.language_model = FromUserDirectory(value);
    if (key == "vision_model") options.vision_model = FromUserDirectory(value);
    if (key == "output") options.output = FromUserDirectory(value);
  }
  training::LlavaRunOptions run;
  run.base_dir = base_dir;
  auto result = training::CombineLlavaCheckpoints(recipe, options, run);
  if (!result.ok()) {
    std::fprintf(stderr, "combine_checkpoints: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  std::printf("wrote %s: %lld language_model.* tensors (iteration %lld of %s) + %lld vision_model.* tensors (%s); "
              "no projector\nstart LLaVA from it with --checkpoint.load=%s --checkpoint.finetune=true "
              "--model.allow_missing_vision_projection_checkpoint=true\n",
              result->output_directory.c_str(), static_cast<long long>(result->language_model_tensors),
              static_cast<long long>(result->language_model_iteration), options.language_model.c_str(),
              static_cast<long long>(result->vision_model_tensors), result->vision_source.c_str(),
              options.output.c_str());
  return 0;
}
