// Corpus reading. Decisions worth knowing:
//  - Directory walks skip hidden entries, fortune `.dat` files (strfile's binary offset tables) and any file
//    whose canonical path was already read. The last rule is what drops Debian's `fortunes/*.u8`: they are
//    symlinks to the plain files (fortune-mod's UTF-8 variants, identical since the files are UTF-8 already),
//    and reading them would double every fortune. Files named explicitly are always read.
//  - Text is passed through byte for byte (including the backspace overstrikes some fortunes use), except that
//    fortune and line handling accepts "\r\n" line ends.
//  - A document that is empty or only whitespace is dropped.
#include "megatron/core/datasets/text_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets {
namespace {

namespace fs = std::filesystem;

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
                                                                 c == '\f' || c == '\v'; });
}

void AddDocument(std::string doc, std::vector<std::string>* out) {
  if (!IsBlank(doc)) out->push_back(std::move(doc));
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return std::move(ss).str();
}

// Calls fn(line_number, line) for every line, without its "\n" or "\r\n"; returns the first error.
template <typename Fn>
absl::Status ForEachLine(std::string_view text, Fn fn) {
  size_t pos = 0;
  int64_t line_number = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++line_number;
    absl::Status st = fn(line_number, line);
    if (!st.ok()) return st;
    pos = end + 1;
  }
  return absl::OkStatus();
}

bool HasFortuneSeparator(std::string_view text) {
  bool found = false;
  ForEachLine(text, [&](int64_t, std::string_view line) {
    if (line == "%") found = true;
    return found ? absl::CancelledError() : absl::OkStatus();
  }).IgnoreError();
  return found;
}

CorpusFormat Detect(const std::string& path, std::string_view text) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".jsonl" || ext == ".json") return CorpusFormat::kJsonl;
  return HasFortuneSeparator(text) ? CorpusFormat::kFortune : CorpusFormat::kText;
}

absl::Status ReadJsonl(const std::string& path, std::string_view text, const std::string& key,
                       std::vector<std::string>* out) {
  return ForEachLine(text, [&](int64_t n, std::string_view line) -> absl::Status {
    if (IsBlank(line)) return absl::OkStatus();
    nlohmann::json obj = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": not valid JSON"));
    }
    if (!obj.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": expected a JSON object, got ",
                                                     obj.type_name()));
    }
    auto it = obj.find(key);
    if (it == obj.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": no \"", key, "\" field"));
    }
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": field \"", key, "\" is ",
                                                     it->type_name(), ", expected a string"));
    }
    AddDocument(it->get<std::string>(), out);
    return absl::OkStatus();
  });
}

void ReadFortunes(std::string_view text, std::vector<std::string>* out) {
  std::string doc;
  ForEachLine(text, [&](int64_t, std::string_view line) {
    if (line == "%") {
      AddDocument(std::move(doc), out);
      doc.clear();
    } else {
      if (!doc.empty()) doc += '\n';
      doc += line;
    }
    return absl::OkStatus();
  }).IgnoreError();
  AddDocument(std::move(doc), out);
}

absl::Status ReadFile(const std::string& path, const CorpusOptions& options, std::vector<std::string>* out) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  CorpusFormat format = options.format == CorpusFormat::kAuto ? Detect(path, *text) : options.format;
  switch (format) {
    case CorpusFormat::kJsonl: return ReadJsonl(path, *text, options.json_key, out);
    case CorpusFormat::kFortune: ReadFortunes(*text, out); return absl::OkStatus();
    case CorpusFormat::kText:
    case CorpusFormat::kAuto: AddDocument(std::move(*text), out); return absl::OkStatus();
  }
  return absl::OkStatus();
}

// Regular files under `dir` (recursively, following symlinks), sorted by path, minus the skipped ones.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  for (auto end = fs::recursive_directory_iterator(); it != end; it.increment(ec)) {
    if (ec) return absl::NotFoundError(absl::StrCat(dir, ": cannot list: ", ec.message()));
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, ".")) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && !absl::EndsWith(name, ".dat")) files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadCorpus(const std::vector<std::string>& paths,
                                                    const CorpusOptions& options) {
  std::vector<std::string> documents;
  std::set<std::string> seen;  // canonical paths already read
  auto canonical = [](const std::string& p) {
    std::error_code ec;
    fs::path c = fs::canonical(p, ec);
    return ec ? p : c.string();
  };
  for (const std::string& path : paths) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      absl::StatusOr<std::vector<std::string>> files = ListDirectory(path);
      if (!files.ok()) return files.status();
      for (const std::string& file : *files) {
        if (!seen.insert(canonical(file)).second) continue;
        absl::Status st = ReadFile(file, options, &documents);
        if (!st.ok()) return st;
      }
    } else {
      if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
      seen.insert(canonical(path));
      absl::Status st = ReadFile(path, options, &documents);
      if (!st.ok()) return st;
    }
  }
  return documents;
}

}  // namespace megatron::datasets
