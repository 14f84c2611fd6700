// Reading raw text corpora into documents: JSONL ({"text": ...} per line), plain text (one document per
// file), and the fortune format ('%' lines separate documents, as in Debian's `fortunes` package).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::datasets {

enum class CorpusFormat {
  kAuto,     // .jsonl/.json -> kJsonl; a file whose lines include a lone "%" -> kFortune; else kText
  kJsonl,    // one JSON object per line; the document is the string at `json_key`
  kText,     // the whole file is one document
  kFortune,  // documents separated by lines holding only "%"
};

struct CorpusOptions {
  CorpusFormat format = CorpusFormat::kAuto;
  std::string json_key = "text";
};

// Reads every document from `paths`; a directory is walked recursively in sorted order (hidden files, fortune
// `.dat` index files, and files already read through another name -- Debian's `*.u8` symlinks -- skipped).
// Empty and whitespace-only documents are dropped. Errors name the file and line.
absl::StatusOr<std::vector<std::string>> ReadCorpus(const std::vector<std::string>& paths,
                                                    const CorpusOptions& options);

}  // namespace megatron::datasets
