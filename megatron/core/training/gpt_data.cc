#include "megatron/core/training/gpt_data.h"

#include <chrono>
#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "megatron/core/datasets/gpt_dataset.h"
#include "megatron/core/datasets/indexed_dataset.h"
#include "megatron/core/datasets/text_corpus.h"
#include "megatron/core/proto/recipe.pb.h"
#include "megatron/core/utils/file_io.h"
#include "megatron/core/utils/progress_bar.h"

namespace megatron::training {
namespace {

using datasets::GPTDataset;
using datasets::IndexedDataset;

absl::StatusOr<datasets::CorpusFormat> ParseFormat(const std::string& format) {
  if (format == "auto") return datasets::CorpusFormat::kAuto;
  if (format == "jsonl") return datasets::CorpusFormat::kJsonl;
  if (format == "text") return datasets::CorpusFormat::kText;
  if (format == "fortune") return datasets::CorpusFormat::kFortune;
  return absl::InvalidArgumentError(absl::StrCat("data.format: \"", format, "\" is not auto, jsonl, text or fortune"));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadCorpusDocuments(const proto::DataConfig& config,
                                                             const std::string& base_dir,
                                                             const std::string& needed_for) {
  if (config.corpus_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("data.corpus: empty, but a corpus is needed to build ", needed_for));
  }
  absl::StatusOr<datasets::CorpusFormat> format = ParseFormat(config.format());
  if (!format.ok()) return format.status();
  std::vector<std::string> paths;
  for (const std::string& p : config.corpus()) paths.push_back(ResolvePath(base_dir, p));
  datasets::CorpusOptions options;
  options.format = *format;
  options.json_key = config.json_key();
  absl::StatusOr<std::vector<std::string>> docs = datasets::ReadCorpus(paths, options);
  if (!docs.ok()) return docs.status();
  if (docs->empty()) return absl::InvalidArgumentError("data.corpus: no documents found");
  return docs;
}

namespace {

// Tokenizes every document (EOD appended) into prefix.bin / prefix.idx.
absl::Status BuildIndexedDataset(const std::vector<std::string>& documents,
                                 const tokenizers::ByteLevelBPETokenizer& tokenizer, const std::string& prefix) {
  if (absl::Status s = utils::MakeParentDirectories(prefix); !s.ok()) return s;
  auto builder = datasets::IndexedDatasetBuilder::Create(prefix, datasets::DtypeForVocab(tokenizer.vocab_size()));
  if (!builder.ok()) return builder.status();
  utils::ProgressBar bar("tokenize", static_cast<int64_t>(documents.size()));
  for (size_t i = 0; i < documents.size(); ++i) {
    std::vector<int32_t> ids = tokenizer.Encode(documents[i]);
    if (tokenizer.eod_id() >= 0) ids.push_back(tokenizer.eod_id());
    if (absl::Status s = builder->AddItem(ids); !s.ok()) return s;
    builder->EndDocument();
    if (i % 256 == 0) bar.Update(static_cast<int64_t>(i));
  }
  if (absl::Status s = builder->Finalize(); !s.ok()) return s;
  bar.Finish(absl::StrFormat("%lld tokens -> %s.{bin,idx}", static_cast<long long>(builder->num_tokens()), prefix));
  return absl::OkStatus();
}

class GptDataImpl : public GptData {
 public:
  GptDataImpl(tokenizers::ByteLevelBPETokenizer tokenizer, std::shared_ptr<const IndexedDataset> dataset,
              GPTDataset train, GPTDataset valid)
      : tokenizer_(std::move(tokenizer)), dataset_(std::move(dataset)), train_(std::move(train)),
        valid_(std::move(valid)) {}

  const tokenizers::ByteLevelBPETokenizer& tokenizer() const override { return tokenizer_; }
  GptBatch Train(int64_t first, int64_t count) const override { return Batch(train_, first, count); }
  GptBatch Valid(int64_t first, int64_t count) const override { return Batch(valid_, first, count); }
  int64_t num_train_samples() const override { return train_.size(); }
  int64_t num_valid_samples() const override { return valid_.size(); }

 private:
  static GptBatch Batch(const GPTDataset& ds, int64_t first, int64_t count) {
    std::vector<int64_t> ids(count);
    for (int64_t k = 0; k < count; ++k) ids[k] = (first + k) % ds.size();
    datasets::GPTBatch b = ds.GetBatch(ids);
    return GptBatch{b.tokens, b.labels, b.loss_mask, b.position_ids};
  }

  tokenizers::ByteLevelBPETokenizer tokenizer_;
  std::shared_ptr<const IndexedDataset> dataset_;
  GPTDataset train_;
  GPTDataset valid_;
};

}  // namespace

GptBatch GptBatch::ToDevice(const at::Device& device) const {
  if (tokens.device() == device) return *this;
  return GptBatch{tokens.to(device), labels.to(device), loss_mask.to(device), position_ids.to(device)};
}

std::string ResolvePath(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/' || base_dir.empty() || base_dir == ".") return path;
  return base_dir + "/" + path;
}

absl::StatusOr<tokenizers::ByteLevelBPETokenizer> PrepareTokenizer(const proto::DataConfig& config,
                                                                   const std::string& base_dir, bool* trained) {
  if (config.tokenizer().empty()) return absl::InvalidArgumentError("data.tokenizer: required (a tokenizer.json path)");
  const std::string tokenizer_path = ResolvePath(base_dir, config.tokenizer());
  *trained = false;
  if (!utils::PathExists(tokenizer_path)) {
    auto documents = ReadCorpusDocuments(config, base_dir, tokenizer_path);
    if (!documents.ok()) return documents.status();
    std::fprintf(stderr, "training a byte-level BPE tokenizer (vocab %d) on %zu documents...\n",
                 config.tokenizer_vocab_size(), documents->size());
    const auto start = std::chrono::steady_clock::now();
    tokenizers::BpeTrainerOptions options;
    options.vocab_size = config.tokenizer_vocab_size();
    auto tokenizer = tokenizers::ByteLevelBPETokenizer::Train(*documents, options);
    if (!tokenizer.ok()) return tokenizer.status();
    if (absl::Status s = utils::MakeParentDirectories(tokenizer_path); !s.ok()) return s;
    if (absl::Status s = tokenizer->Save(tokenizer_path); !s.ok()) return s;
    std::fprintf(stderr, "tokenizer: %d ids in %.1f s -> %s\n", tokenizer->vocab_size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 tokenizer_path.c_str());
    *trained = true;
  }
  return tokenizers::ByteLevelBPETokenizer::Load(tokenizer_path);
}

absl::StatusOr<std::unique_ptr<GptData>> GptData::Prepare(const proto::DataConfig& config,
                                                          const std::string& base_dir, int64_t train_samples,
                                                          int64_t valid_samples) {
  if (config.tokenizer().empty()) return absl::InvalidArgumentError("data.tokenizer: required (a tokenizer.json path)");
  if (config.data_prefix().empty()) {
    return absl::InvalidArgumentError("data.data_prefix: required (the .bin/.idx prefix)");
  }
  if (absl::StatusOr<datasets::CorpusFormat> f = ParseFormat(config.format()); !f.ok()) return f.status();
  const std::string prefix = ResolvePath(base_dir, config.data_prefix());
  std::optional<std::vector<std::string>> documents;
  bool trained_tokenizer = false;
  auto tokenizer = PrepareTokenizer(config, base_dir, &trained_tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();

  // A dataset tokenized with another tokenizer would be silently wrong: rebuild it with the new one.
  if (trained_tokenizer || !utils::PathExists(prefix + ".idx") || !utils::PathExists(prefix + ".bin")) {
    if (!documents) {
      auto docs = ReadCorpusDocuments(config, base_dir, prefix + ".{bin,idx}");
      if (!docs.ok()) return docs.status();
      documents = std::move(*docs);
    }
    if (absl::Status s = BuildIndexedDataset(*documents, *tokenizer, prefix); !s.ok()) return s;
  }
  auto opened = IndexedDataset::Open(prefix);
  if (!opened.ok()) return opened.status();
  auto dataset = std::make_shared<const IndexedDataset>(std::move(*opened));

  datasets::GPTDatasetConfig ds_config;
  ds_config.sequence_length = config.seq_length();
  ds_config.random_seed = static_cast<uint32_t>(config.seed());
  ds_config.split = config.split();
  ds_config.num_samples = {train_samples, valid_samples, 0};
  ds_config.eod_token = tokenizer->eod_id();
  ds_config.eod_mask_loss = config.eod_mask_loss();
  auto train = GPTDataset::Build(dataset, ds_config, datasets::Split::kTrain);
  if (!train.ok()) return absl::InvalidArgumentError(absl::StrCat("data.split (train): ", train.status().message()));
  auto valid = GPTDataset::Build(dataset, ds_config, datasets::Split::kValid);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("data.split (valid): ", valid.status().message()));
  if (train->size() == 0 || valid->size() == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data.split: \"%s\" leaves %lld train and %lld validation samples of %d tokens; both must be non-empty",
        config.split(), static_cast<long long>(train->size()), static_cast<long long>(valid->size()),
        config.seq_length()));
  }
  return std::unique_ptr<GptData>(
      new GptDataImpl(std::move(*tokenizer), std::move(dataset), std::move(*train), std::move(*valid)));
}

}  // namespace megatron::training
