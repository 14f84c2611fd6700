// train_tokenizer: trains a byte-level BPE tokenizer (megatron/core/tokenizers/bpe_tokenizer.h) on raw text and
// writes a HuggingFace tokenizer.json.
//
//   bazel run //tools:train_tokenizer -- --input=PATH[,PATH...] --vocab_size=8192 --output=tokenizer.json
//       [--format=auto|jsonl|text|fortune] [--json_key=text] [--min_frequency=2]
//       [--special_tokens=<|endoftext|>[,TOKEN...]]
//
// Inputs are read with megatron::datasets::ReadCorpus: files or directories (walked recursively, sorted),
// JSONL documents under --json_key, whole text files, or fortune files ('%' lines separate documents).
// Relative paths are taken from the directory `bazel run` was started in. Training is deterministic: the same
// inputs and flags give the same file. Prints a summary (documents, bytes, time, vocabulary, bytes per token on
// the training corpus). Exit status: 0 ok, 1 failure, 2 bad command line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "megatron/core/datasets/text_corpus.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"

namespace {

constexpr char kUsage[] =
    "usage: train_tokenizer --input=PATH[,PATH...] --output=tokenizer.json [--vocab_size=8192]\n"
    "         [--format=auto|jsonl|text|fortune] [--json_key=text] [--min_frequency=2]\n"
    "         [--special_tokens=<|endoftext|>[,TOKEN...]]\n";

struct Flags {
  std::vector<std::string> inputs;
  std::string output;
  megatron::tokenizers::BpeTrainerOptions trainer;
  megatron::datasets::CorpusOptions corpus;
};

// `bazel run` executes in the runfiles tree; paths the user typed are relative to where they typed them.
std::string FromUserDirectory(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

absl::Status ParseFlags(int argc, char** argv, Flags* flags) {
  std::map<std::string, std::string> values;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return absl::InvalidArgumentError("expected --name=value, got '" + arg + "'");
    }
    values[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
  }
  for (const auto& [name, value] : values) {
    if (name == "input") {
      for (absl::string_view p : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        flags->inputs.push_back(FromUserDirectory(std::string(p)));
      }
    } else if (name == "output") {
      flags->output = FromUserDirectory(value);
    } else if (name == "vocab_size") {
      if (!absl::SimpleAtoi(value, &flags->trainer.vocab_size)) {
        return absl::InvalidArgumentError("--vocab_size: not an integer: '" + value + "'");
      }
    } else if (name == "min_frequency") {
      if (!absl::SimpleAtoi(value, &flags->trainer.min_frequency)) {
        return absl::InvalidArgumentError("--min_frequency: not an integer: '" + value + "'");
      }
    } else if (name == "special_tokens") {
      flags->trainer.special_tokens = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (name == "json_key") {
      flags->corpus.json_key = value;
    } else if (name == "format") {
      using megatron::datasets::CorpusFormat;
      const std::map<std::string, CorpusFormat> formats = {{"auto", CorpusFormat::kAuto},
                                                           {"jsonl", CorpusFormat::kJsonl},
                                                           {"text", CorpusFormat::kText},
                                                           {"fortune", CorpusFormat::kFortune}};
      auto it = formats.find(value);
      if (it == formats.end()) return absl::InvalidArgumentError("--format: unknown format '" + value + "'");
      flags->corpus.format = it->second;
    } else {
      return absl::InvalidArgumentError("unknown flag --" + name);
    }
  }
  if (flags->inputs.empty()) return absl::InvalidArgumentError("--input is required");
  if (flags->output.empty()) return absl::InvalidArgumentError("--output is required");
  return absl::OkStatus();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (absl::Status s = ParseFlags(argc, argv, &flags); !s.ok()) {
    std::fprintf(stderr, "train_tokenizer: %s\n%s", std::string(s.message()).c_str(), kUsage);
    return 2;
  }

  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<std::string>> docs = megatron::datasets::ReadCorpus(flags.inputs, flags.corpus);
  if (!docs.ok()) {
    std::fprintf(stderr, "train_tokenizer: %s\n", docs.status().ToString().c_str());
    return 1;
  }
  size_t bytes = 0;
  for (const std::string& d : *docs) bytes += d.size();
  const double read_s = SecondsSince(start);

  start = std::chrono::steady_clock::now();
  absl::StatusOr<megatron::tokenizers::ByteLevelBPETokenizer> tok =
      megatron::tokenizers::ByteLevelBPETokenizer::Train(*docs, flags.trainer);
  if (!tok.ok()) {
    std::fprintf(stderr, "train_tokenizer: %s\n", tok.status().ToString().c_str());
    return 1;
  }
  const double train_s = SecondsSince(start);
  if (absl::Status s = tok->Save(flags.output); !s.ok()) {
    std::fprintf(stderr, "train_tokenizer: %s\n", s.ToString().c_str());
    return 1;
  }

  // Bytes per token on the training corpus: the usual quick measure of how well the vocabulary fits.
  start = std::chrono::steady_clock::now();
  size_t tokens = 0;
  for (const std::string& d : *docs) tokens += tok->Encode(d).size();
  const double encode_s = SecondsSince(start);

  std::printf("documents:      %zu (%zu bytes) read in %.2f s\n", docs->size(), bytes, read_s);
  std::printf("trained:        vocab %d (%d merges, %zu special) in %.2f s\n", tok->vocab_size(),
              tok->num_merges(), flags.trainer.special_tokens.size(), train_s);
  std::printf("corpus encoded: %zu tokens, %.2f bytes/token, in %.2f s\n", tokens,
              tokens == 0 ? 0.0 : static_cast<double>(bytes) / tokens, encode_s);
  std::printf("wrote:          %s\n", flags.output.c_str());
  return 0;
}
