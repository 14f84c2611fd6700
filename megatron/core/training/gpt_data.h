// The data side of GPT pretraining: tokenizer and indexed dataset prepared from a raw corpus on first use,
// then train/valid batches by global sample index (so a resumed run sees exactly the batches it would have).
//
// Preparation is idempotent and cached next to the outputs: if `data.tokenizer` does not exist it is trained on
// the corpus and written; if `data.data_prefix`.{bin,idx} do not exist the corpus is tokenized into them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"

namespace megatron::proto {
class DataConfig;
}

namespace megatron::training {

struct GptBatch {
  at::Tensor tokens;        // [b, s] int64
  at::Tensor labels;        // [b, s] int64, tokens shifted left by one
  at::Tensor loss_mask;     // [b, s] float
  at::Tensor position_ids;  // [b, s] int64
  GptBatch ToDevice(const at::Device& device) const;
};

class GptData {
 public:
  virtual ~GptData() = default;

  // Resolves relative paths against `base_dir`, prepares the data if needed and builds the splits with enough
  // samples for `train_samples` and `valid_samples`.
  static absl::StatusOr<std::unique_ptr<GptData>> Prepare(const proto::DataConfig& config,
                                                          const std::string& base_dir, int64_t train_samples,
                                                          int64_t valid_samples);

  virtual const tokenizers::ByteLevelBPETokenizer& tokenizer() const = 0;
  // Samples [first, first + count) of a split, wrapping around its length.
  virtual GptBatch Train(int64_t first, int64_t count) const = 0;
  virtual GptBatch Valid(int64_t first, int64_t count) const = 0;
  virtual int64_t num_train_samples() const = 0;
  virtual int64_t num_valid_samples() const = 0;
};

// `path` if absolute, else base_dir/path.
std::string ResolvePath(const std::string& base_dir, const std::string& path);

// The pieces of Prepare that other pretraining data (BERT, T5) shares:
// the documents of data.corpus (errors name the field; `needed_for` says what they are read for) ...
absl::StatusOr<std::vector<std::string>> ReadCorpusDocuments(const proto::DataConfig& config,
                                                             const std::string& base_dir,
                                                             const std::string& needed_for);
// ... and the tokenizer at data.tokenizer, trained on the corpus and written first if the file does not exist
// (*trained says so: datasets tokenized with an older tokenizer must then be rebuilt).
absl::StatusOr<tokenizers::ByteLevelBPETokenizer> PrepareTokenizer(const proto::DataConfig& config,
                                                                   const std::string& base_dir, bool* trained);

}  // namespace megatron::training
