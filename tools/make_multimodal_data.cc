// make_multimodal_data: writes the embedded default multimodal dataset (synthetic shapes with captions, VQA and
// conversations; megatron/core/datasets/multimodal/synthetic.h) as WebDataset tar shards plus tokenizer.json and
// dataset.json.
//
//   bazel run //tools:make_multimodal_data -- [--output_dir=runs/data/multimodal_shapes] [--num_train=3000]
//       [--num_valid=300] [--image_size=64] [--samples_per_shard=1000] [--seed=1234] [--vocab_size=512]
//
// Relative paths are taken from the directory `bazel run` was started in. The output is a pure function of the
// flags. Exit status: 0 ok, 1 failure, 2 bad command line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "megatron/core/datasets/multimodal/synthetic.h"

namespace {

constexpr char kUsage[] =
    "usage: make_multimodal_data [--output_dir=runs/data/multimodal_shapes] [--num_train=3000] [--num_valid=300]\n"
    "         [--image_size=64] [--samples_per_shard=1000] [--seed=1234] [--vocab_size=512]\n";

std::string FromUserDirectory(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

absl::Status ParseFlags(int argc, char** argv, std::string* dir,
                        megatron::datasets::multimodal::SyntheticDatasetConfig* config) {
  std::map<std::string, int*> ints = {{"num_train", &config->num_train},
                                      {"num_valid", &config->num_valid},
                                      {"image_size", &config->image_size},
                                      {"samples_per_shard", &config->samples_per_shard},
                                      {"vocab_size", &config->tokenizer_vocab_size}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return absl::InvalidArgumentError("expected --name=value, got '" + arg + "'");
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    if (name == "output_dir") {
      *dir = value;
    } else if (name == "seed") {
      if (!absl::SimpleAtoi(value, &config->seed)) return absl::InvalidArgumentError("--seed: not an integer: '" + value + "'");
    } else if (auto it = ints.find(name); it != ints.end()) {
      if (!absl::SimpleAtoi(value, it->second)) {
        return absl::InvalidArgumentError("--" + name + ": not an integer: '" + value + "'");
      }
    } else {
      return absl::InvalidArgumentError("unknown flag --" + name);
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "runs/data/multimodal_shapes";
  megatron::datasets::multimodal::SyntheticDatasetConfig config;
  if (absl::Status s = ParseFlags(argc, argv, &dir, &config); !s.ok()) {
    std::fprintf(stderr, "make_multimodal_data: %s\n%s", std::string(s.message()).c_str(), kUsage);
    return 2;
  }
  dir = FromUserDirectory(dir);
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = megatron::datasets::multimodal::WriteSyntheticDataset(dir, config); !s.ok()) {
    std::fprintf(stderr, "make_multimodal_data: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %d train + %d held-out samples (%dx%d images) to %s in %.1f s\n", config.num_train,
              config.num_valid, config.image_size, config.image_size, dir.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}
