// The LLaVA splice (Megatron's LLaVAModel._preprocess_data): expands every <image> token of the text into the
// tile embeddings of its image and moves labels and loss mask along, so that the language model sees one combined
// sequence. This is the multimodal contract most easily got wrong, so it lives here as a pure function.
//
// Inputs (b samples of t tokens; labels are already next-token labels: labels[k] is the target of input_ids[k]):
//   image_embeddings    [img_seq, total_tiles, h]  (tile-major in the order of the <image> tokens across the
//                                                   batch: sample 0 first, left to right), or undefined
//   language_embeddings [b, t, h]                  (text embeddings; image-token rows are ignored)
//   input_ids [b, t] int64, labels [b, t] int64 (optional), loss_mask [b, t] (optional)
//   num_image_tiles [num_images] int64              (tiles of each image, in <image>-token order)
// Each image token at source index k of sample i occupies tiles(k) * img_seq positions; text token k moves to
//   pos(k) = cumsum(lens + 1)[k] - 1, lens = tiles * img_seq - 1 at image tokens and 0 at text tokens.
// Outputs, S = max over samples of (t + tiles_i * img_seq - images_i), raised to language_max_sequence_length
// when pad_to_max_length (pipeline parallelism needs fixed shapes), then truncated to it:
//   embeddings [b, S, h]: text rows at pos(k), image rows (tile by tile, token by token) at the other positions
//     up to the sample's last input position, zeros after;
//   labels [b, S]: IGNORE_INDEX, then labels[k-1] at pos(k) - 1 for every text index k >= 1 and labels[t-1] at
//     the sample's last position (so the last image position of an image followed by text predicts that text);
//   loss_mask [b, S]: loss_mask[k] at pos(k) (not shifted), 0 on image positions, padding and on the text
//     position just before each image (text never predicts an image);
//   input_ids [b, S]: text ids at pos(k), 0 elsewhere.
// Worked example (research notes §1.3.1): input_ids [0, 1, IMG, 2, 3], labels [1, IMG, 2, 3, 4], N tokens per
// image -> embeddings [e0, e1, img x N, e2, e3], labels [1, -100, -100 x (N-1), 2, 3, 4],
// loss_mask [m0, 0, 0 x N, m3, m4].
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace megatron::models::multimodal {

inline constexpr int64_t kIgnoreIndex = -100;            // labels that never contribute loss
inline constexpr int64_t kDefaultImageTokenIndex = -200;  // Megatron's placeholder when no tokenizer id is set

struct SpliceInputs {
  at::Tensor image_embeddings;     // [img_seq, total_tiles, h] or undefined
  at::Tensor language_embeddings;  // [b, t, h]
  at::Tensor input_ids;            // [b, t]
  at::Tensor labels;               // [b, t] or undefined (inference)
  at::Tensor loss_mask;            // [b, t] or undefined
  at::Tensor num_image_tiles;      // [num_images]; empty: no images in the batch
  int64_t image_token_index = kDefaultImageTokenIndex;
  int64_t img_seq_len = 0;         // embeddings per tile
  int64_t language_max_sequence_length = 0;
  bool pad_to_max_length = false;
};

struct SpliceOutputs {
  at::Tensor embeddings;  // [b, S, h]
  at::Tensor labels;      // [b, S] or undefined
  at::Tensor loss_mask;   // [b, S] or undefined
  at::Tensor input_ids;   // [b, S]
};

// Checks every shape and count against the rules above (e.g. the number of tiles must match the <image> tokens)
// and throws c10::Error naming the mismatch.
SpliceOutputs SpliceImageEmbeddings(const SpliceInputs& in);

// The combined length of each sample before truncation: t + tiles_i * img_seq - images_i.
std::vector<int64_t> CombinedLengths(const at::Tensor& input_ids, const at::Tensor& num_image_tiles,
                                     int64_t image_token_index, int64_t img_seq_len);

}  // namespace megatron::models::multimodal
