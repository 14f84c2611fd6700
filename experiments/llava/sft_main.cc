// bazel run //experiments/llava:sft -- --help
#include "experiments/llava/cli.h"

int main(int argc, char** argv) {
  return megatron::experiments::llava::Run(megatron::experiments::llava::Mode::kSft, argc, argv);
}
