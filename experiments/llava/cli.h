// The command line shared by the LLaVA binaries: recipe loading and overrides as in experiments/gpt.
#pragma once

namespace megatron::experiments::llava {

enum class Mode { kPretrain, kSft, kGenerate, kEval };

// main() of each binary: `bazel run //experiments/llava:<mode> -- [--recipe=PATH] [--field.path=value ...]`.
int Run(Mode mode, int argc, char** argv);

}  // namespace megatron::experiments::llava
