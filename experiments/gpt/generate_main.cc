// bazel run //experiments/gpt:generate -- --load=runs/gpt_fortunes_tiny/checkpoints --prompt="Hello" [...]
//
// Loads the latest (or --iteration=N) checkpoint written by pretrain, rebuilds the model and tokenizer from the
// recipe stored in it, and samples. Sampling flags are the fields of megatron.proto.SamplingConfig:
//   --prompt=TEXT --max_new_tokens=N --greedy --temperature=T --top_k=K --top_p=P --use_kv_cache=false --seed=S
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/inference/text_generation.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"
#include "megatron/core/training/gpt_data.h"
#include "megatron/core/training/recipe.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "generate: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace megatron;
  auto command_line = training::ParseCommandLine(argc, argv, {"load", "iteration", "device"});
  if (!command_line.ok()) return Fail(std::string(command_line.status().message()));
  if (command_line->help) {
    std::printf("usage: generate --load=CHECKPOINT_DIR [--iteration=N] [--device=cpu|cuda] [--prompt=TEXT] "
                "[--max_new_tokens=N] [--greedy] [--temperature=T] [--top_k=K] [--top_p=P] [--use_kv_cache=BOOL] "
                "[--seed=S]\n");
    return 0;
  }
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  const std::string base_dir = workspace != nullptr ? workspace : ".";
  std::string load, device_name = "cpu";
  int64_t iteration = -1;
  for (const auto& [key, value] : command_line->reserved) {
    if (key == "load") load = training::ResolvePath(base_dir, value);
    if (key == "device") device_name = value;
    if (key == "iteration" && !absl::SimpleAtoi(value, &iteration)) return Fail("--iteration: not an integer: " + value);
  }
  if (load.empty()) return Fail("--load=CHECKPOINT_DIR is required (e.g. runs/gpt_fortunes_tiny/checkpoints)");
  proto::SamplingConfig sampling;
  for (const auto& [path, value] : command_line->overrides) {
    if (absl::Status s = training::ApplyOverride(path, value, &sampling); !s.ok()) return Fail(std::string(s.message()));
  }
  if (iteration < 0) {
    auto latest = checkpointing::LatestIteration(load);
    if (!latest.ok()) return Fail(std::string(latest.status().message()));
    if (!latest->has_value()) return Fail(load + ": no checkpoint (latest_checkpointed_iteration.txt is missing)");
    iteration = **latest;
  }
  auto checkpoint = checkpointing::LoadCheckpoint(load, iteration, checkpointing::LoadParts::kModelOnly);
  if (!checkpoint.ok()) return Fail(std::string(checkpoint.status().message()));
  proto::PretrainRecipe recipe;
  if (absl::Status s = training::ParseTextProto(checkpoint->recipe, load + " (stored recipe)", &recipe); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  auto tokenizer = tokenizers::ByteLevelBPETokenizer::Load(training::ResolvePath(base_dir, recipe.data().tokenizer()));
  if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));
  // The model shape: the checkpoint's word embeddings fix the vocabulary size.
  transformer::TransformerConfig config;
  if (absl::Status s = transformer::FromProto(recipe.model(), tokenizer->vocab_size(), &config); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  auto embedding = checkpoint->model.find("embedding.word_embeddings.weight");
  if (embedding != checkpoint->model.end()) config.vocab_size = embedding->second.size(0);
  auto model = models::GPTModel::Create(config);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  if (absl::Status s = (*model)->LoadStateDict(checkpoint->model, transformer::LoadMode::kStrict); !s.ok()) {
    return Fail(checkpointing::IterationDirectory(load, iteration) + "/model.safetensors: " + std::string(s.message()));
  }
  (*model)->ToDevice(at::Device(device_name));

  std::printf("%s\n", inference::GenerateText(**model, *tokenizer, sampling).c_str());
  return 0;
}
