// preprocess_data: tokenizes a text corpus into Megatron's indexed dataset (PREFIX.bin + PREFIX.idx), the
// input of GPTDataset here and of Megatron-LM's --data-path (the files are byte-compatible).
//
//   bazel run //tools:preprocess_data -- --input=/usr/share/games/fortunes --tokenizer=tokenizer.json
//       --output_prefix=/data/fortunes   (one command line)
//
// Flags (--name=value; booleans also as --name / --noname):
//   --input=PATH[,PATH...]  files or directories (walked recursively, sorted; see text_corpus.h)
//   --format=auto|jsonl|text|fortune   default auto (by extension, then by '%' separator lines)
//   --json_key=text         the JSONL field holding the document
//   --tokenizer=FILE        a HuggingFace tokenizer.json (byte-level BPE)
//   --output_prefix=PREFIX  writes PREFIX.bin and PREFIX.idx (Megatron's own tool adds "_text_document")
//   --append_eod=true       end every document with the tokenizer's <|endoftext|>
//
// Each document becomes one sequence (Megatron's default, without --split-sentences). Tokens are stored as
// uint16 when the vocabulary has fewer than 65500 ids, else int32, as Megatron chooses. The files appear
// only once complete (temporary names + rename).
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "megatron/core/datasets/indexed_dataset.h"
#include "megatron/core/datasets/text_corpus.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"
#include "megatron/core/utils/progress_bar.h"

namespace {

namespace ds = megatron::datasets;

constexpr char kUsage[] =
    "usage: preprocess_data --input=PATH[,PATH...] --tokenizer=tokenizer.json --output_prefix=PREFIX\n"
    "                       [--format=auto|jsonl|text|fortune] [--json_key=text] [--append_eod=true|false]\n";

struct Flags {
  std::vector<std::string> inputs;
  ds::CorpusOptions corpus;
  std::string tokenizer;
  std::string output_prefix;
  bool append_eod = true;
};

absl::StatusOr<bool> ParseBool(const std::string& name, const std::string& value) {
  if (value == "true" || value == "1" || value == "yes") return true;
  if (value == "false" || value == "0" || value == "no") return false;
  return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": expected true or false"));
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  std::map<std::string, std::string> values;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\" (flags are --name=value)"));
    }
    arg = arg.substr(2);
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      // A bare boolean: --append_eod / --noappend_eod.
      if (arg.rfind("no", 0) == 0 && arg != "no") {
        values[arg.substr(2)] = "false";
      } else {
        values[arg] = "true";
      }
    } else {
      values[arg.substr(0, eq)] = arg.substr(eq + 1);
    }
  }
  for (const auto& [name, value] : values) {
    if (name == "input") {
      for (absl::string_view p : absl::StrSplit(value, ',', absl::SkipEmpty())) flags.inputs.emplace_back(p);
    } else if (name == "format") {
      if (value == "auto") {
        flags.corpus.format = ds::CorpusFormat::kAuto;
      } else if (value == "jsonl") {
        flags.corpus.format = ds::CorpusFormat::kJsonl;
      } else if (value == "text") {
        flags.corpus.format = ds::CorpusFormat::kText;
      } else if (value == "fortune") {
        flags.corpus.format = ds::CorpusFormat::kFortune;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--format=", value, ": expected auto, jsonl, text or fortune"));
      }
    } else if (name == "json_key") {
      flags.corpus.json_key = value;
    } else if (name == "tokenizer") {
      flags.tokenizer = value;
    } else if (name == "output_prefix") {
      flags.output_prefix = value;
    } else if (name == "append_eod") {
      absl::StatusOr<bool> b = ParseBool(name, value);
      if (!b.ok()) return b.status();
      flags.append_eod = *b;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (flags.inputs.empty()) return absl::InvalidArgumentError("--input is required");
  if (flags.tokenizer.empty()) return absl::InvalidArgumentError("--tokenizer is required");
  if (flags.output_prefix.empty()) return absl::InvalidArgumentError("--output_prefix is required");
  return flags;
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string Rate(double count, double seconds) {
  const double r = seconds > 0 ? count / seconds : 0.0;
  if (r >= 1e6) return absl::StrFormat("%.2fM", r / 1e6);
  if (r >= 1e3) return absl::StrFormat("%.1fk", r / 1e3);
  return absl::StrFormat("%.0f", r);
}

absl::Status Run(const Flags& flags) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<std::string>> documents = ds::ReadCorpus(flags.inputs, flags.corpus);
  if (!documents.ok()) return documents.status();
  if (documents->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(absl::StrJoin(flags.inputs, ","), ": no documents found"));
  }
  absl::StatusOr<megatron::tokenizers::ByteLevelBPETokenizer> tokenizer =
      megatron::tokenizers::ByteLevelBPETokenizer::Load(flags.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();
  const int32_t eod = tokenizer->eod_id();
  if (flags.append_eod && eod < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        flags.tokenizer, ": has no <|endoftext|> token to append; pass --append_eod=false or add one"));
  }
  const ds::TokenDtype dtype = ds::DtypeForVocab(tokenizer->vocab_size());
  absl::StatusOr<ds::IndexedDatasetBuilder> builder = ds::IndexedDatasetBuilder::Create(flags.output_prefix, dtype);
  if (!builder.ok()) return builder.status();

  const auto tokenize_start = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(documents->size());
  megatron::utils::ProgressBar bar("tokenize", total);
  int64_t tokens = 0;
  for (int64_t d = 0; d < total; ++d) {
    std::vector<int32_t> ids = tokenizer->Encode((*documents)[d]);
    if (flags.append_eod) ids.push_back(eod);
    absl::Status st = builder->AddItem(ids);
    if (!st.ok()) return st;
    builder->EndDocument();
    tokens += static_cast<int64_t>(ids.size());
    if ((d & 63) == 63) bar.Update(d + 1, absl::StrCat(Rate(tokens, SecondsSince(tokenize_start)), " tok/s"));
  }
  bar.Finish(absl::StrCat(Rate(tokens, SecondsSince(tokenize_start)), " tok/s"));
  absl::Status st = builder->Finalize();
  if (!st.ok()) return st;

  const double seconds = SecondsSince(start);
  std::printf("wrote %s.bin and %s.idx: %lld documents, %lld tokens (%s, vocab %d%s) in %.1f s (%s tok/s)\n",
              flags.output_prefix.c_str(), flags.output_prefix.c_str(), static_cast<long long>(total),
              static_cast<long long>(tokens), ds::DtypeName(dtype), tokenizer->vocab_size(),
              flags.append_eod ? ", EOD appended" : "", seconds, Rate(tokens, seconds).c_str());
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "preprocess_data: %s\n%s", std::string(flags.status().message()).c_str(), kUsage);
    return 2;
  }
  absl::Status st = Run(*flags);
  if (!st.ok()) {
    std::fprintf(stderr, "preprocess_data: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
