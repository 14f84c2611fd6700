#include "megatron/core/datasets/multimodal/task_encoder.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "ATen/ops/empty.h"
#include "ATen/ops/stack.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "c10/util/Exception.h"

namespace megatron::datasets::multimodal {
namespace {

int CountOccurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + needle.size())) ++n;
  return n;
}

at::Tensor Int64Matrix(const std::vector<int64_t>& values, int64_t rows, int64_t cols) {
  at::Tensor t = at::empty({rows, cols}, at::TensorOptions().dtype(at::kLong));
  if (!values.empty()) std::memcpy(t.data_ptr<int64_t>(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

at::Tensor Int32Vector(const std::vector<int32_t>& values) {
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::TensorOptions().dtype(at::kInt));
  if (!values.empty()) std::memcpy(t.data_ptr<int32_t>(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

}  // namespace

TaskEncoder::TaskEncoder(ChatTemplate chat, TaskEncoderConfig config) : chat_(std::move(chat)), config_(config) {
  TORCH_CHECK(config_.tokens_per_tile > 0 && config_.decoder_seq_length > 0,
              "TaskEncoder: tokens_per_tile (", config_.tokens_per_tile, ") and decoder_seq_length (",
              config_.decoder_seq_length, ") must be positive");
  TORCH_CHECK(!config_.use_tiling || (config_.tiling.tile_size == config_.tile_processor.height &&
                                      config_.tiling.tile_size == config_.tile_processor.width),
              "TaskEncoder: tiling.tile_size ", config_.tiling.tile_size, " must equal the tile processor's size ",
              config_.tile_processor.height, "x", config_.tile_processor.width);
}

absl::StatusOr<std::vector<Turn>> TaskEncoder::ToConversation(const MultimodalSample& sample) const {
  std::vector<Turn> turns;
  const std::string image_line = absl::StrCat(kImageToken, "\n");
  switch (sample.kind) {
    case SampleKind::kCaption:
      turns.push_back({Role::kUser, absl::StrCat(image_line, config_.caption_prompt)});
      turns.push_back({Role::kAssistant, sample.caption});
      break;
    case SampleKind::kVqa: {
      const bool tagged = sample.question.find(kImageToken) != std::string::npos;
      turns.push_back({Role::kUser, tagged ? sample.question : absl::StrCat(image_line, sample.question)});
      turns.push_back({Role::kAssistant, sample.answer});
      break;
    }
    case SampleKind::kConversation:
      turns = sample.conversation;
      break;
  }
  if (!config_.system_message.empty() && (turns.empty() || turns.front().role != Role::kSystem)) {
    turns.insert(turns.begin(), Turn{Role::kSystem, config_.system_message});
  }
  int tags = 0;
  Turn* first_user = nullptr;
  for (Turn& t : turns) {
    if (t.role == Role::kAssistant) continue;
    tags += CountOccurrences(t.content, kImageToken);
    if (t.role == Role::kUser && first_user == nullptr) first_user = &t;
  }
  const int images = static_cast<int>(sample.images.size());
  if (images == 0) {
    for (Turn& t : turns) {
      t.content = absl::StrReplaceAll(t.content, {{image_line, ""}});
      t.content = absl::StrReplaceAll(t.content, {{kImageToken, ""}});
    }
  } else if (tags > images) {
    return absl::InvalidArgumentError(absl::StrCat("sample '", sample.key, "': ", tags, " ", kImageToken,
                                                   " tags but only ", images, " images"));
  } else if (tags < images) {
    if (first_user == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sample '", sample.key, "' has images but no user turn"));
    }
    std::string prefix;
    for (int i = tags; i < images; ++i) prefix += image_line;
    first_user->content = prefix + first_user->content;
  }
  return turns;
}

at::Tensor TaskEncoder::ImageTiles(const image::Image& img) const {
  if (!config_.use_tiling) return image::Preprocess(img, config_.tile_processor).unsqueeze(0);
  std::vector<at::Tensor> tiles;
  for (const image::Image& tile : image::DynamicPreprocess(img, config_.tiling)) {
    tiles.push_back(image::Preprocess(tile, config_.tile_processor));
  }
  return at::stack(tiles);
}

absl::StatusOr<EncodedSample> TaskEncoder::Encode(const MultimodalSample& sample) const {
  absl::StatusOr<std::vector<Turn>> turns = ToConversation(sample);
  if (!turns.ok()) return turns.status();
  absl::StatusOr<TokenizedConversation> tok = chat_.Tokenize(*turns);
  if (!tok.ok()) return absl::InvalidArgumentError(absl::StrCat("sample '", sample.key, "': ", tok.status().message()));
  EncodedSample out;
  out.key = sample.key;
  out.tokens = std::move(tok->tokens);
  out.target = std::move(tok->target);
  const int64_t image_tokens = std::count(out.tokens.begin(), out.tokens.end(), chat_.image_token_id());
  if (image_tokens != static_cast<int64_t>(sample.images.size())) {
    return absl::InternalError(absl::StrCat("sample '", sample.key, "': ", image_tokens, " image tokens for ",
                                            sample.images.size(), " images"));
  }
  image::TilingConfig tiling = config_.tiling;
  if (config_.use_tiling) {
    std::vector<std::pair<int, int>> sizes;
    for (const image::Image& img : sample.images) sizes.push_back({img.width, img.height});
    const int max_image_tokens = config_.decoder_seq_length - static_cast<int>(out.tokens.size()) - 4;
    tiling = image::FitTileBudget(sizes, tiling, config_.tokens_per_tile, max_image_tokens);
  }
  TaskEncoderConfig local = config_;
  local.tiling = tiling;
  const TaskEncoder with_budget(chat_, local);
  int64_t total_tiles = 0;
  for (const image::Image& img : sample.images) {
    const at::Tensor tiles = with_budget.ImageTiles(img);
    out.num_tiles.push_back(static_cast<int32_t>(tiles.size(0)));
    total_tiles += tiles.size(0);
    for (int64_t t = 0; t < tiles.size(0); ++t) out.tiles.push_back(tiles[t]);
  }
  out.total_len = static_cast<int64_t>(out.tokens.size()) + total_tiles * config_.tokens_per_tile -
                  static_cast<int64_t>(sample.images.size());
  // target_has_trainable_tokens: target[k] is predicted at the combined position just before token k, which
  // must lie inside the decoder sequence.
  bool trainable = false;
  int64_t position = 0;  // combined position of token k
  size_t image_index = 0;
  for (size_t k = 0; k < out.tokens.size() && position - 1 < config_.decoder_seq_length; ++k) {
    if (k >= 1 && out.target[k] != kIgnoreIndex) {
      trainable = true;
      break;
    }
    position += out.tokens[k] == chat_.image_token_id()
                    ? static_cast<int64_t>(out.num_tiles[image_index++]) * config_.tokens_per_tile
                    : 1;
  }
  if (!trainable) {
    return absl::FailedPreconditionError(absl::StrCat("sample '", sample.key, "': no trained token within ",
                                                      config_.decoder_seq_length, " combined positions (total ",
                                                      out.total_len, ")"));
  }
  return out;
}

MultimodalBatch TaskEncoder::Batch(const std::vector<EncodedSample>& samples) const {
  TORCH_CHECK(!samples.empty(), "TaskEncoder::Batch: no samples");
  int64_t length = config_.batch_seq_length;
  if (length <= 0) {
    for (const EncodedSample& s : samples) length = std::max<int64_t>(length, s.tokens.size());
  }
  const int64_t b = static_cast<int64_t>(samples.size());
  std::vector<int64_t> tokens(b * length, chat_.pad_id()), labels(b * length, kIgnoreIndex), positions;
  std::vector<int32_t> num_tiles;
  std::vector<at::Tensor> tiles;
  MultimodalBatch batch;
  for (int64_t r = 0; r < b; ++r) {
    const EncodedSample& s = samples[r];
    batch.keys.push_back(s.key);
    size_t image_index = 0, tile_index = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(s.tokens.size()); ++i) {
      const bool is_image = s.tokens[i] == chat_.image_token_id();
      if (i < length) {
        tokens[r * length + i] = s.tokens[i];
        if (i + 1 < static_cast<int64_t>(s.target.size())) labels[r * length + i] = s.target[i + 1];
        if (is_image) {
          positions.push_back(r);
          positions.push_back(i);
          num_tiles.push_back(s.num_tiles[image_index]);
          for (int32_t t = 0; t < s.num_tiles[image_index]; ++t) tiles.push_back(s.tiles[tile_index + t]);
        }
      }
      if (is_image) tile_index += s.num_tiles[image_index++];
    }
  }
  batch.tokens = Int64Matrix(tokens, b, length);
  batch.labels = Int64Matrix(labels, b, length);
  batch.loss_mask = batch.labels.ne(kIgnoreIndex).to(at::kFloat);
  batch.num_image_tiles = Int32Vector(num_tiles);
  batch.image_positions = Int64Matrix(positions, static_cast<int64_t>(num_tiles.size()), 2);
  batch.images = tiles.empty() ? at::empty({0, 3, config_.tile_processor.height, config_.tile_processor.width},
                                           at::TensorOptions().dtype(at::kFloat))
                               : at::stack(tiles);
  return batch;
}

MultimodalBatch TaskEncoder::PackedBatch(const std::vector<EncodedSample>& samples) const {
  TORCH_CHECK(!samples.empty(), "TaskEncoder::PackedBatch: no samples");
  std::vector<int64_t> tokens, labels, positions;
  std::vector<int32_t> num_tiles, cu_lengths{0}, cu_token_lengths{0};
  std::vector<at::Tensor> tiles;
  MultimodalBatch batch;
  for (const EncodedSample& s : samples) {
    batch.keys.push_back(s.key);
    size_t image_index = 0;
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      if (s.tokens[i] == chat_.image_token_id()) {
        positions.push_back(0);
        positions.push_back(static_cast<int64_t>(tokens.size()));
        num_tiles.push_back(s.num_tiles[image_index++]);
      }
      tokens.push_back(s.tokens[i]);
      labels.push_back(i + 1 < s.target.size() ? s.target[i + 1] : kIgnoreIndex);
    }
    tiles.insert(tiles.end(), s.tiles.begin(), s.tiles.end());
    cu_lengths.push_back(cu_lengths.back() + static_cast<int32_t>(s.total_len));
    cu_token_lengths.push_back(static_cast<int32_t>(tokens.size()));
    batch.max_length = std::max(batch.max_length, s.total_len);
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  batch.tokens = Int64Matrix(tokens, 1, n);
  batch.labels = Int64Matrix(labels, 1, n);
  batch.loss_mask = batch.labels.ne(kIgnoreIndex).to(at::kFloat);
  batch.num_image_tiles = Int32Vector(num_tiles);
  batch.image_positions = Int64Matrix(positions, static_cast<int64_t>(num_tiles.size()), 2);
  batch.images = tiles.empty() ? at::empty({0, 3, config_.tile_processor.height, config_.tile_processor.width},
                                           at::TensorOptions().dtype(at::kFloat))
                               : at::stack(tiles);
  batch.cu_lengths = Int32Vector(cu_lengths);
  batch.cu_token_lengths = Int32Vector(cu_token_lengths);
  return batch;
}

absl::StatusOr<MultimodalBatch> TaskEncoder::EncodePrompt(const std::vector<image::Image>& images,
                                                          const std::string& user_text) const {
  MultimodalSample sample;
  sample.key = "prompt";
  sample.kind = SampleKind::kConversation;
  sample.conversation = {{Role::kUser, user_text}};
  sample.images = images;
  absl::StatusOr<std::vector<Turn>> turns = ToConversation(sample);
  if (!turns.ok()) return turns.status();
  EncodedSample e;
  e.key = sample.key;
  e.tokens = chat_.EncodePrompt(*turns);
  e.target.assign(e.tokens.size(), kIgnoreIndex);
  for (const image::Image& img : images) {
    const at::Tensor tiles = ImageTiles(img);
    e.num_tiles.push_back(static_cast<int32_t>(tiles.size(0)));
    for (int64_t t = 0; t < tiles.size(0); ++t) e.tiles.push_back(tiles[t]);
  }
  TaskEncoderConfig unpadded = config_;
  unpadded.batch_seq_length = 0;
  return TaskEncoder(chat_, unpadded).Batch({e});
}

absl::StatusOr<std::vector<MultimodalBatch>> PackIntoBatches(const TaskEncoder& encoder,
                                                             const std::vector<EncodedSample>& samples,
                                                             int64_t capacity) {
  std::vector<int64_t> sizes;
  for (const EncodedSample& s : samples) sizes.push_back(s.total_len);
  absl::StatusOr<std::vector<std::vector<int>>> packs = GreedyKnapsack(sizes, capacity);
  if (!packs.ok()) return packs.status();
  std::vector<MultimodalBatch> batches;
  for (const std::vector<int>& pack : *packs) {
    std::vector<EncodedSample> members;
    for (int i : pack) members.push_back(samples[i]);
    batches.push_back(encoder.PackedBatch(members));
  }
  return batches;
}

absl::StatusOr<std::vector<std::vector<int>>> GreedyKnapsack(const std::vector<int64_t>& sizes, int64_t capacity) {
  std::vector<int> order(sizes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return sizes[a] < sizes[b]; });
  if (!order.empty() && sizes[order.back()] > capacity) {
    return absl::InvalidArgumentError(absl::StrCat("packing: a sample of combined length ", sizes[order.back()],
                                                   " exceeds the packing capacity ", capacity));
  }
  std::vector<std::vector<int>> packs;
  while (!order.empty()) {
    std::vector<int> pack;
    int64_t remaining = capacity;
    while (true) {
      // bisect_right(sizes, remaining) - 1: the largest item that fits (the last of equal sizes).
      auto it = std::upper_bound(order.begin(), order.end(), remaining,
                                 [&](int64_t value, int idx) { return value < sizes[idx]; });
      if (it == order.begin()) break;
      --it;
      remaining -= sizes[*it];
      pack.push_back(*it);
      order.erase(it);
    }
    packs.push_back(std::move(pack));
  }
  return packs;
}

}  // namespace megatron::datasets::multimodal
