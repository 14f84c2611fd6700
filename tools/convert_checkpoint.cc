// Converts a checkpoint between the legacy and the core model trees (legacy/checkpoint/convert.h has the key
// mapping). Reads the latest iteration of --input (our atomic checkpoint format) and writes the same iteration,
// model tensors only, under --output; a checkpoint of the wrong tree or family is refused before anything is
// written.
//
//   bazel run //tools:convert_checkpoint -- --model=gpt|bert|t5 --direction=legacy_to_core|core_to_legacy
//       --input=DIR --output=DIR
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "legacy/checkpoint/convert.h"

namespace {

constexpr char kUsage[] =
    "usage: convert_checkpoint --model=gpt|bert|t5 --direction=legacy_to_core|core_to_legacy --input=DIR --output=DIR\n";

// `bazel run` executes in the runfiles tree; paths the user typed are relative to where they typed them.
std::string FromUserDirectory(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

absl::Status Run(int argc, char** argv) {
  std::map<std::string, std::string> values;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("expected --name=value, got '", arg, "'"));
    }
    values[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
  }
  for (const auto& [name, value] : values) {
    if (name != "model" && name != "direction" && name != "input" && name != "output") {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  for (const char* required : {"model", "direction", "input", "output"}) {
    if (!values.count(required)) return absl::InvalidArgumentError(absl::StrCat("--", required, " is required"));
  }
  megatron::legacy::ModelFamily family;
  if (values["model"] == "gpt") {
    family = megatron::legacy::ModelFamily::kGpt;
  } else if (values["model"] == "bert") {
    family = megatron::legacy::ModelFamily::kBert;
  } else if (values["model"] == "t5") {
    family = megatron::legacy::ModelFamily::kT5;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--model=", values["model"], ": expected gpt, bert or t5"));
  }
  megatron::legacy::Direction direction;
  if (values["direction"] == "legacy_to_core") {
    direction = megatron::legacy::Direction::kLegacyToCore;
  } else if (values["direction"] == "core_to_legacy") {
    direction = megatron::legacy::Direction::kCoreToLegacy;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--direction=", values["direction"], ": expected legacy_to_core or core_to_legacy"));
  }
  const std::string input = FromUserDirectory(values["input"]), output = FromUserDirectory(values["output"]);
  if (absl::Status s = megatron::legacy::ConvertCheckpoint(input, output, family, direction); !s.ok()) return s;
  std::cout << "wrote " << output << " (" << values["direction"] << ", " << values["model"] << ")\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::Status s = Run(argc, argv);
  if (!s.ok()) {
    std::cerr << "convert_checkpoint: " << s.message() << "\n" << kUsage;
    return 1;
  }
  return 0;
}
