// The LLaVA recipes behind `bazel run //experiments/llava:{pretrain,sft,generate,eval}` (Megatron's
// examples/multimodal train.py, run_text_generation.py and evaluation/).
//
//   pretrain: the projector learns to map image features into the language model's embedding space on captions;
//             Megatron freezes its pretrained towers here (model.freeze_*), the shapes recipe trains its random ones.
//   sft:      starts from the pretrain checkpoint (checkpoint.load + finetune), trains on VQA and multi-turn
//             conversations (loss on assistant turns only); the freezing flags say which parts.
// A run can also start from tools:combine_checkpoints' output (a language-model and a vision checkpoint, no
// projector) with model.allow_missing_vision_projection_checkpoint, as Megatron's --pretrained-checkpoint does.
//   generate: one image and a prompt in, text out (greedy or sampled, with the KV cache).
//   eval:     held-out split: VQA exact-match accuracy per question type against the chance level of that type
//             (single VQA samples and every question of the held-out conversations, each asked on its own about
//             the image), and caption exact match / token F1, printed as a table.
//
// Data (LlavaData): WebDataset shards of the recipe's data.dir (the embedded synthetic shapes dataset is made
// there on first use when data.make_synthetic), a byte-level BPE tokenizer with the chat special tokens (trained
// on the shards' text if data.tokenizer does not exist), the ChatML task encoder. Training samples are encoded
// once; batch k of the run is a pure function of k (a seeded permutation per epoch), so a resumed run sees the
// same batches as an uninterrupted one. Checkpoints are the platform's atomic ones (model keys language_model.*,
// vision_model.*, vision_projection.*).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "megatron/core/datasets/multimodal/task_encoder.h"
#include "megatron/core/models/multimodal/llava_model.h"
#include "megatron/core/proto/llava.pb.h"

namespace megatron::training {

// The model shape of a recipe (vocabulary padded from the tokenizer; image_token_index from it too).
absl::StatusOr<models::multimodal::LlavaConfig> LlavaConfigFromRecipe(const proto::LlavaRecipe& recipe,
                                                                      int tokenizer_vocab_size,
                                                                      int64_t image_token_id);

class LlavaData {
 public:
  // Makes or opens everything the recipe's data section names. Paths are relative to base_dir.
  static absl::StatusOr<std::unique_ptr<LlavaData>> Prepare(const proto::LlavaRecipe& recipe,
                                                            const std::string& base_dir, bool show_progress);

  const datasets::multimodal::ChatTemplate& chat() const { return encoder_->chat(); }
  const tokenizers::ByteLevelBPETokenizer& tokenizer() const { return encoder_->chat().tokenizer(); }
  // Call once the model shape is known (tokens per tile, tile size and normalization of the vision model).
  absl::Status Configure(const models::multimodal::LlavaConfig& config, bool show_progress);
  const datasets::multimodal::TaskEncoder& encoder() const { return *encoder_; }

  int64_t num_train() const { return static_cast<int64_t>(train_.size()); }
  int64_t num_valid() const { return static_cast<int64_t>(valid_.size()); }
  // Training samples [first, first + count) of the endless, per-epoch shuffled stream.
  datasets::multimodal::MultimodalBatch Train(int64_t first, int count) const;
  // Validation samples [first, first + count) (wrapping around), in file order.
  datasets::multimodal::MultimodalBatch Valid(int64_t first, int count) const;
  // The raw held-out samples (every kind), for eval.
  const std::vector<datasets::multimodal::MultimodalSample>& valid_samples() const { return valid_raw_; }

 private:
  proto::LlavaRecipe recipe_;
  std::string base_dir_;
  std::unique_ptr<datasets::multimodal::TaskEncoder> encoder_;
  std::vector<datasets::multimodal::MultimodalSample> train_raw_, valid_raw_;
  std::vector<datasets::multimodal::EncodedSample> train_, valid_;
};

// The model a recipe describes, initialised from training.seed (so two builds are identical), with `data`
// configured to match it (tokens per tile, tile size). What pretrain, sft and tools:combine_checkpoints build.
absl::StatusOr<std::unique_ptr<models::multimodal::LLaVAModel>> BuildLlavaModel(const proto::LlavaRecipe& recipe,
                                                                                LlavaData& data, bool show_progress);

struct LlavaRunOptions {
  std::string base_dir = ".";
  bool show_progress = true;
};

struct LlavaTrainResult {
  int64_t start_iteration = 0;
  int64_t final_iteration = 0;
  std::vector<double> train_losses;
  std::vector<std::pair<int64_t, double>> valid_losses;
  int64_t num_parameters = 0;
  int64_t num_trainable_parameters = 0;
  double samples_per_second = 0;
  double tokens_per_second = 0;  // combined (text + image) tokens the language model processed
};

// pretrain and sft (which one is the recipe's freezing flags and data kinds).
absl::StatusOr<LlavaTrainResult> TrainLlava(const proto::LlavaRecipe& recipe, const LlavaRunOptions& options);

// A trained model (the latest checkpoint of checkpoint.load, or checkpoint.save) with its data.
struct LoadedLlava {
  std::unique_ptr<LlavaData> data;
  std::unique_ptr<models::multimodal::LLaVAModel> model;
  int64_t iteration = 0;
};
absl::StatusOr<LoadedLlava> LoadLlava(const proto::LlavaRecipe& recipe, const LlavaRunOptions& options);

struct LlavaGenerateOptions {
  int max_new_tokens = 16;
  bool greedy = true;
  double temperature = 1.0;
  int top_k = 0;
  uint64_t seed = 1234;
};
// Answers `prompt` about `image` (one user turn "<image>\n<prompt>" after the recipe's system message).
std::string GenerateLlava(const LoadedLlava& llava, const datasets::image::Image& image, const std::string& prompt,
                          const LlavaGenerateOptions& options);

struct LlavaEvalRow {
  std::string task;        // "vqa/colour", ..., "vqa (all)", "caption"
  int64_t count = 0;
  double accuracy = 0;     // exact match
  double chance = 0;       // 1 / number of distinct answers of that type (VQA); 0 for captions
  double token_f1 = 0;     // captions
};
struct LlavaEvalResult {
  std::vector<LlavaEvalRow> rows;
  std::string table;       // the rows, formatted
};
absl::StatusOr<LlavaEvalResult> EvalLlava(const LoadedLlava& llava, int max_samples, int max_new_tokens,
                                          bool show_progress);

}  // namespace megatron::training
