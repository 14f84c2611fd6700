#include "megatron/core/models/multimodal/splice.h"

#include <algorithm>

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

namespace megatron::models::multimodal {
namespace {

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Per-sample tile totals, checking that the tiles list matches the <image> tokens.
std::vector<int64_t> TilesPerSample(const std::vector<int64_t>& ids, int64_t b, int64_t t,
                                    const std::vector<int64_t>& tiles, int64_t image_token_index) {
  std::vector<int64_t> per_sample(b, 0);
  size_t next_image = 0;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t k = 0; k < t; ++k) {
      if (ids[i * t + k] != image_token_index) continue;
      TORCH_CHECK(next_image < tiles.size(), "LLaVA splice: the batch has more <image> tokens (id ",
                  image_token_index, ") than entries in num_image_tiles (", tiles.size(), ")");
      TORCH_CHECK(tiles[next_image] > 0, "LLaVA splice: num_image_tiles[", next_image, "] = ", tiles[next_image],
                  " must be positive");
      per_sample[i] += tiles[next_image++];
    }
  }
  TORCH_CHECK(next_image == tiles.size(), "LLaVA splice: num_image_tiles has ", tiles.size(),
              " entries but the batch has ", next_image, " <image> tokens (id ", image_token_index, ")");
  return per_sample;
}

}  // namespace

std::vector<int64_t> CombinedLengths(const at::Tensor& input_ids, const at::Tensor& num_image_tiles,
                                     int64_t image_token_index, int64_t img_seq_len) {
  TORCH_CHECK(input_ids.dim() == 2, "LLaVA splice: input_ids must be [b, t], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const std::vector<int64_t> ids = ToVector(input_ids);
  const std::vector<int64_t> tiles = TilesPerSample(ids, b, t, ToVector(num_image_tiles), image_token_index);
  std::vector<int64_t> out(b);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t images = std::count(ids.begin() + i * t, ids.begin() + (i + 1) * t, image_token_index);
    out[i] = t + tiles[i] * img_seq_len - images;
  }
  return out;
}

SpliceOutputs SpliceImageEmbeddings(const SpliceInputs& in) {
  const at::Tensor& text = in.language_embeddings;
  TORCH_CHECK(in.input_ids.dim() == 2, "LLaVA splice: input_ids must be [b, t], got ", in.input_ids.sizes());
  const int64_t b = in.input_ids.size(0), t = in.input_ids.size(1);
  TORCH_CHECK(text.dim() == 3 && text.size(0) == b && text.size(1) == t, "LLaVA splice: language_embeddings ",
              text.sizes(), " must be [b, t, h] with [b, t] = ", in.input_ids.sizes());
  const int64_t h = text.size(2);
  for (const at::Tensor* x : {&in.labels, &in.loss_mask}) {
    TORCH_CHECK(!x->defined() || x->sizes() == in.input_ids.sizes(), "LLaVA splice: labels/loss_mask ",
                x->sizes(), " must match input_ids ", in.input_ids.sizes());
  }
  TORCH_CHECK(in.language_max_sequence_length > 0, "LLaVA splice: language_max_sequence_length must be set");

  const int64_t num_images_listed = in.num_image_tiles.defined() ? in.num_image_tiles.numel() : 0;
  if (num_images_listed == 0) {
    // Text only: the image embeddings (if any) stay in the graph with weight 0 so that every rank's backward
    // touches the same parameters (Megatron's graph anchor).
    at::Tensor embeddings = text;
    if (in.image_embeddings.defined() && in.image_embeddings.numel() > 0) {
      embeddings = embeddings + in.image_embeddings.sum().to(text.scalar_type()) * 0;
    }
    return {embeddings, in.labels, in.loss_mask, in.input_ids};
  }
  const int64_t img_seq = in.img_seq_len;
  TORCH_CHECK(img_seq > 0, "LLaVA splice: img_seq_len must be positive, got ", img_seq);
  TORCH_CHECK(in.image_embeddings.defined() && in.image_embeddings.dim() == 3 &&
                  in.image_embeddings.size(0) == img_seq && in.image_embeddings.size(2) == h,
              "LLaVA splice: image_embeddings must be [img_seq_len=", img_seq, ", tiles, h=", h, "], got ",
              in.image_embeddings.defined() ? in.image_embeddings.sizes() : at::IntArrayRef{});

  const std::vector<int64_t> ids = ToVector(in.input_ids);
  const std::vector<int64_t> tiles_list = ToVector(in.num_image_tiles);
  const std::vector<int64_t> tiles_per_sample = TilesPerSample(ids, b, t, tiles_list, in.image_token_index);
  int64_t total_tiles = 0;
  for (int64_t v : tiles_list) total_tiles += v;
  TORCH_CHECK(in.image_embeddings.size(1) == total_tiles, "LLaVA splice: image_embeddings has ",
              in.image_embeddings.size(1), " tiles but num_image_tiles sums to ", total_tiles);

  // Destination of every source token (pos(k)) and each sample's combined length.
  std::vector<int64_t> pos(b * t), seq_len(b);
  {
    size_t image = 0;
    for (int64_t i = 0; i < b; ++i) {
      int64_t cursor = -1;
      for (int64_t k = 0; k < t; ++k) {
        const bool is_image = ids[i * t + k] == in.image_token_index;
        cursor += is_image ? tiles_list[image++] * img_seq : 1;
        pos[i * t + k] = cursor;
      }
      seq_len[i] = cursor + 1;
    }
  }
  int64_t max_len = *std::max_element(seq_len.begin(), seq_len.end());
  if (in.pad_to_max_length) max_len = std::max(max_len, in.language_max_sequence_length);

  // Gather the combined sequence from one source matrix: text rows, image rows, a zero row for padding.
  const int64_t image_rows = total_tiles * img_seq;
  const int64_t zero_row = b * t + image_rows;
  std::vector<int64_t> gather(b * max_len, zero_row);
  std::vector<int64_t> out_ids(b * max_len, 0);
  std::vector<uint8_t> is_text(b * max_len, 0);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t k = 0; k < t; ++k) {
      if (ids[i * t + k] == in.image_token_index) continue;
      gather[i * max_len + pos[i * t + k]] = i * t + k;
      out_ids[i * max_len + pos[i * t + k]] = ids[i * t + k];
      is_text[i * max_len + pos[i * t + k]] = 1;
    }
  }
  int64_t next_image_row = 0;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t p = 0; p < seq_len[i]; ++p) {
      if (!is_text[i * max_len + p]) gather[i * max_len + p] = b * t + next_image_row++;
    }
  }
  TORCH_CHECK(next_image_row == image_rows, "LLaVA splice: internal error: ", next_image_row,
              " image positions for ", image_rows, " image embeddings");
  const at::Tensor source = at::cat({text.reshape({b * t, h}),
                                     in.image_embeddings.permute({1, 0, 2}).reshape({image_rows, h}).to(text.scalar_type()),
                                     at::zeros({1, h}, text.options())});
  const auto long_cpu = at::TensorOptions().dtype(at::kLong);
  const at::Tensor index = at::from_blob(gather.data(), {b * max_len}, long_cpu).clone().to(text.device());
  SpliceOutputs out;
  out.embeddings = at::index_select(source, 0, index).view({b, max_len, h});
  out.input_ids = at::from_blob(out_ids.data(), {b, max_len}, long_cpu).clone().to(in.input_ids.device());

  if (in.labels.defined()) {
    const std::vector<int64_t> labels = ToVector(in.labels);
    std::vector<int64_t> out_labels(b * max_len, kIgnoreIndex);
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t k = 1; k < t; ++k) {
        if (ids[i * t + k] == in.image_token_index) continue;
        out_labels[i * max_len + pos[i * t + k] - 1] = labels[i * t + k - 1];
      }
      out_labels[i * max_len + seq_len[i] - 1] = labels[i * t + t - 1];
    }
    out.labels = at::from_blob(out_labels.data(), {b, max_len}, long_cpu).clone().to(in.labels.device());
  }
  if (in.loss_mask.defined()) {
    const at::Tensor mask_in = in.loss_mask.to(at::kCPU, at::kDouble).contiguous();
    const double* m = mask_in.data_ptr<double>();
    std::vector<double> out_mask(b * max_len, 0.0);
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t k = 0; k < t; ++k) {
        if (ids[i * t + k] != in.image_token_index) out_mask[i * max_len + pos[i * t + k]] = m[i * t + k];
      }
      for (int64_t k = 1; k < t; ++k) {
        // The position just before an image (its last embedding if the previous token is an image too).
        if (ids[i * t + k] == in.image_token_index) out_mask[i * max_len + pos[i * t + k - 1]] = 0.0;
      }
    }
    out.loss_mask = at::from_blob(out_mask.data(), {b, max_len}, at::TensorOptions().dtype(at::kDouble))
                        .clone()
                        .to(in.loss_mask.device(), in.loss_mask.scalar_type());
  }

  const int64_t limit = in.language_max_sequence_length;
  if (max_len > limit) {
    out.embeddings = out.embeddings.narrow(1, 0, limit);
    out.input_ids = out.input_ids.narrow(1, 0, limit);
    if (out.labels.defined()) out.labels = out.labels.narrow(1, 0, limit);
    if (out.loss_mask.defined()) out.loss_mask = out.loss_mask.narrow(1, 0, limit);
  }
  return out;
}

}  // namespace megatron::models::multimodal
