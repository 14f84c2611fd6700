// Task encoder and batching for LLaVA-style training (Megatron's examples/multimodal TaskEncoder, research
// notes §4.7, and get_batch, §4.5).
//
// Encode(sample):
//   1. Conversation: captions become user "<image>\n<caption_prompt>" + assistant caption; VQA becomes user
//      "<image>\n<question>" (unless the question already has <image>) + assistant answer; conversations are
//      used as they are. A system turn with system_message is prepended when set and absent.
//   2. Image tags (encode_llava_sft): more <image> tags than images is an error; fewer, the missing tags are
//      prepended ("<image>\n" each) to the first user turn; no images, all tags are removed.
//   3. Tokens and target from the chat template (loss only on assistant turns, chat_template.h).
//   4. Tiles: each image becomes 1 tile (the processor's exact resize), or with use_tiling the dynamic tiles
//      (image/tiling.h) with the budget shrunk until sum(tiles) * tokens_per_tile fits
//      decoder_seq_length - len(tokens) - 4 (Megatron's rule).
//   5. total_len = len(tokens) + sum(tiles) * tokens_per_tile - n_images (the combined length the model sees).
//      A sample with no trained target inside the first decoder_seq_length combined positions is rejected
//      (FailedPrecondition; Megatron's target_has_trainable_tokens), so loaders can skip it.
//
// Batch(samples) pads to L (batch_seq_length, or the longest sample) and shifts labels as Megatron's get_batch
// does: tokens = t[:L], labels[i] = target[i + 1] (kIgnoreIndex past the end), loss_mask = labels != -100.
// Samples longer than L are cut; images whose <image> token is cut are dropped with it, so the invariant
// "images in <image> order across the batch, row by row" always holds.
//
// PackedBatch(samples) concatenates samples into one row (micro-batch 1), each sample's labels shifted within
// the sample (its last label is kIgnoreIndex, so no sample predicts the next one's first token), with
// cu_lengths in combined units as Megatron's pack_selected_samples. GreedyKnapsack picks the samples per pack.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "megatron/core/datasets/image/image_processor.h"
#include "megatron/core/datasets/image/tiling.h"
#include "megatron/core/datasets/multimodal/chat_template.h"
#include "megatron/core/datasets/multimodal/sample.h"

namespace megatron::datasets::multimodal {

struct TaskEncoderConfig {
  int decoder_seq_length = 512;  // combined (text + image embeddings) length the language model takes
  int tokens_per_tile = 16;      // image embeddings per tile (the vision model's get_num_image_embeddings)
  image::ImageProcessorConfig tile_processor = image::TileProcessor(64, image::Statistics::kSiglip);
  bool use_tiling = false;
  image::TilingConfig tiling;    // tile_size must equal tile_processor's height and width
  std::string system_message = "Answer the questions.";  // empty: no system turn
  std::string caption_prompt = "Describe the image.";
  int batch_seq_length = 0;      // L for Batch; 0: the longest sample's token count
};

struct EncodedSample {
  std::string key;
  std::vector<int64_t> tokens;
  std::vector<int64_t> target;        // same length as tokens; kIgnoreIndex where untrained
  std::vector<at::Tensor> tiles;      // each [3, H, W] float32, images in <image> order, tiles in tile order
  std::vector<int32_t> num_tiles;     // per image
  int64_t total_len = 0;              // combined length
};

struct MultimodalBatch {
  at::Tensor tokens;            // [b, s] int64 (padding: the pad id)
  at::Tensor labels;            // [b, s] int64, already shifted: labels[i] is the target for tokens[i]
  at::Tensor loss_mask;         // [b, s] float32, 1 where labels != kIgnoreIndex
  at::Tensor images;            // [n_tiles, 3, H, W] float32 (n_tiles may be 0)
  at::Tensor num_image_tiles;   // [n_images] int32, one per <image> token, row-major over the batch
  at::Tensor image_positions;   // [n_images, 2] int64: (row, token index) of each <image> token
  // Packed batches only (undefined / 0 otherwise):
  at::Tensor cu_lengths;        // [n_seq + 1] int32, sample boundaries in combined units (Megatron's)
  at::Tensor cu_token_lengths;  // [n_seq + 1] int32, the same boundaries in token units
  int64_t max_length = 0;       // largest combined sample length
  std::vector<std::string> keys;
};

class TaskEncoder {
 public:
  TaskEncoder(ChatTemplate chat, TaskEncoderConfig config);

  // Step 1-2: the conversation the sample is trained on.
  absl::StatusOr<std::vector<Turn>> ToConversation(const MultimodalSample& sample) const;
  absl::StatusOr<EncodedSample> Encode(const MultimodalSample& sample) const;

  MultimodalBatch Batch(const std::vector<EncodedSample>& samples) const;
  MultimodalBatch PackedBatch(const std::vector<EncodedSample>& samples) const;

  // Tiles for one image as encoded (used by generation too): [n, 3, H, W].
  at::Tensor ImageTiles(const image::Image& img) const;

  // A generation prompt: the system turn (if configured), one user turn with the images' tags (missing tags
  // prepended as in training) and the text, then "<|im_start|>assistant\n". Returns a batch of one row with
  // labels all kIgnoreIndex and loss_mask 0; generation stops at chat().im_end_id().
  absl::StatusOr<MultimodalBatch> EncodePrompt(const std::vector<image::Image>& images,
                                               const std::string& user_text) const;

  const ChatTemplate& chat() const { return chat_; }
  const TaskEncoderConfig& config() const { return config_; }

 private:
  ChatTemplate chat_;
  TaskEncoderConfig config_;
};

// Packs encoded samples into rows of at most `capacity` combined positions (GreedyKnapsack on total_len), one
// PackedBatch per pack, in pack order.
absl::StatusOr<std::vector<MultimodalBatch>> PackIntoBatches(const TaskEncoder& encoder,
                                                             const std::vector<EncodedSample>& samples,
                                                             int64_t capacity);

// Megatron's greedy_knapsack: items sorted by size; each pack repeatedly takes the largest remaining item that
// still fits. Returns the packs as item indices (into `sizes`). Errors if an item exceeds the capacity.
absl::StatusOr<std::vector<std::vector<int>>> GreedyKnapsack(const std::vector<int64_t>& sizes, int64_t capacity);

}  // namespace megatron::datasets::multimodal
