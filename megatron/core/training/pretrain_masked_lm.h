// BERT and T5 pretraining: the loop behind `bazel run //experiments/bert:pretrain` and
// `//experiments/t5:pretrain` (Megatron's pretrain_bert.py / pretrain_t5.py), single process.
//
// Data: the recipe's tokenizer (trained on the corpus if missing, as for GPT: gpt_data.h) and a sentence-level
// indexed dataset at data.data_prefix, built if missing: every document split into sentences (lines, and
// after ". ", "? ", "! "), one sequence per sentence, no EOD. Special ids follow the tokenizer's vocabulary V:
//   BERT  [CLS] V, [SEP] V+1, [MASK] V+2, [PAD] V+3
//   T5    <BOS> V, <EOS> V+1, <PAD> V+2, <MASK> V+3, 100 sentinels V+4 .. V+103
// and the model's vocabulary is V + specials, padded as model.make_vocab_size_divisible_by says. Whole-word
// masking treats a byte-level BPE token that begins with a letter or digit as a word continuation.
// Samples: datasets/bert_dataset.h (binary sentence-order head) and datasets/t5_dataset.h (span corruption;
// the decoder length is the longest the masking budget can need, 1 + 2 * floor(0.15 * (seq_length - 2))).
//
// Per iteration: global_batch_size / micro_batch_size micro-batches (sample ids continue from iteration *
// global_batch_size, wrapping around the split), gradient accumulation, clipping, AdamW with the recipe's
// schedule; validation every eval_interval and at the end; checkpoints (and resume from the latest) as for GPT.
// Loss: BERT = masked-LM mean over masked positions + the binary head's cross entropy (BertPretrainingLoss);
// T5 = mean cross entropy over the decoder's real positions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "megatron/core/proto/recipe.pb.h"

namespace megatron::training {

enum class MaskedLmFamily { kBert, kT5 };

struct MaskedLmOptions {
  std::string base_dir = ".";  // relative recipe paths are resolved against this
  bool show_progress = true;
};

struct MaskedLmResult {
  int64_t start_iteration = 0;
  int64_t final_iteration = 0;
  std::vector<double> train_losses;                      // one per iteration run by this call
  std::vector<std::pair<int64_t, double>> valid_losses;  // (iteration, loss), including iteration 0 if fresh
  int64_t num_parameters = 0;
  double tokens_per_second = 0;
};

absl::StatusOr<MaskedLmResult> PretrainMaskedLm(MaskedLmFamily family, const proto::PretrainRecipe& recipe,
                                                const MaskedLmOptions& options);

// The sentences of a document: split at newlines and after ". ", "? ", "! "; trimmed; empty ones dropped.
std::vector<std::string> SplitSentences(const std::string& document);

// main() of the pretrain binaries: --recipe=PATH (default `default_recipe`, a runfile) and --field=value
// overrides; prints the validation loss before and after.
int MaskedLmPretrainMain(int argc, char** argv, MaskedLmFamily family, const char* default_recipe);

}  // namespace megatron::training
