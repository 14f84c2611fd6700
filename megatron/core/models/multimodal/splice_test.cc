// The splice against (1) the worked example of the research notes (§1.3.1), written out by hand, and (2) a
// transliteration of Megatron's tensor-op implementation (cumsum of lens, boolean masks, fancy indexing) on random
// batches with several images, tiles, text-only samples and truncation.
#include "megatron/core/models/multimodal/splice.h"

#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

namespace megatron::models::multimodal {
namespace {

constexpr int64_t kImg = -200;

at::Tensor Longs(std::vector<int64_t> v, std::vector<int64_t> shape) {
  return at::tensor(v, at::kLong).view(shape);
}

TEST(SpliceTest, WorkedExampleOfTheResearchNotes) {
  // input_ids [0, 1, IMG, 2, 3], labels [1, IMG, 2, 3, 4], N = 3 tokens per image (one tile).
  const int64_t N = 3, h = 2;
  SpliceInputs in;
  in.input_ids = Longs({0, 1, kImg, 2, 3}, {1, 5});
  in.labels = Longs({1, kImg, 2, 3, 4}, {1, 5});
  in.loss_mask = at::tensor(std::vector<double>{0.5, 0.6, 0.7, 0.8, 0.9}, at::kDouble).view({1, 5});
  // Text embedding row k = (10k, 10k + 1); image token j = (100 + j, 200 + j).
  in.language_embeddings = (at::arange(5, at::kDouble) * 10).view({1, 5, 1}) + at::arange(2, at::kDouble).view({1, 1, 2});
  in.image_embeddings = at::arange(N, at::kDouble).view({N, 1, 1}) + at::tensor(std::vector<double>{100, 200}, at::kDouble).view({1, 1, 2});
  in.num_image_tiles = Longs({1}, {1});
  in.image_token_index = kImg;
  in.img_seq_len = N;
  in.language_max_sequence_length = 64;
  SpliceOutputs out = SpliceImageEmbeddings(in);

  ASSERT_EQ(out.embeddings.sizes(), (at::IntArrayRef{1, 7, h}));
  const std::vector<double> first_column = {0, 10, 100, 101, 102, 30, 40};
  for (int p = 0; p < 7; ++p) EXPECT_EQ(out.embeddings[0][p][0].item<double>(), first_column[p]) << p;
  const std::vector<int64_t> labels = {1, -100, -100, -100, 2, 3, 4};
  const std::vector<double> mask = {0.5, 0, 0, 0, 0, 0.8, 0.9};
  const std::vector<int64_t> ids = {0, 1, 0, 0, 0, 2, 3};
  for (int p = 0; p < 7; ++p) {
    EXPECT_EQ(out.labels[0][p].item<int64_t>(), labels[p]) << p;
    EXPECT_EQ(out.loss_mask[0][p].item<double>(), mask[p]) << p;
    EXPECT_EQ(out.input_ids[0][p].item<int64_t>(), ids[p]) << p;
  }
}

// Megatron's _preprocess_data (fixed img_seq_len mode) in tensor ops, for comparison.
SpliceOutputs MegatronReference(const SpliceInputs& in) {
  const at::Tensor& ids = in.input_ids;
  const int64_t b = ids.size(0), t = ids.size(1), h = in.language_embeddings.size(2);
  const at::Tensor image_token_mask = ids == in.image_token_index;
  const at::Tensor num_images_per_sample = image_token_mask.sum(-1);
  std::vector<int64_t> tiles_per_sample;
  int64_t offset = 0;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t n = num_images_per_sample[i].item<int64_t>();
    tiles_per_sample.push_back(n == 0 ? 0 : in.num_image_tiles.narrow(0, offset, n).sum().item<int64_t>());
    offset += n;
  }
  const at::Tensor tiles_b = at::tensor(tiles_per_sample, at::kLong);
  const at::Tensor seq_lens = tiles_b * in.img_seq_len - num_images_per_sample + t;
  int64_t max_seq_len = seq_lens.max().item<int64_t>();
  if (in.pad_to_max_length) max_seq_len = std::max(max_seq_len, in.language_max_sequence_length);
  // image_token_mask_lens: num_tiles * img_seq_len - 1 at each image token.
  at::Tensor lens = image_token_mask.to(at::kLong).clone();
  {
    auto where_img = image_token_mask.nonzero();  // [n, 2] in row-major order = <image> order
    for (int64_t j = 0; j < where_img.size(0); ++j) {
      lens[where_img[j][0].item<int64_t>()][where_img[j][1].item<int64_t>()] =
          in.num_image_tiles[j].item<int64_t>() * in.img_seq_len - 1;
    }
  }
  const at::Tensor new_position_ids = at::cumsum(lens + 1, -1) - 1;
  const at::Tensor text_idx = image_token_mask.logical_not().nonzero();
  const at::Tensor batch_indices = text_idx.select(1, 0), non_image_indices = text_idx.select(1, 1);
  const at::Tensor text_position_ids = new_position_ids.index({batch_indices, non_image_indices});

  SpliceOutputs out;
  out.embeddings = at::zeros({b, max_seq_len, h}, in.language_embeddings.options());
  out.embeddings.index_put_({batch_indices, text_position_ids}, in.language_embeddings.index({batch_indices, non_image_indices}));
  at::Tensor images_mask = at::ones({b, max_seq_len}, at::kBool);
  images_mask.index_put_({batch_indices, text_position_ids}, at::zeros({}, at::kBool));
  const at::Tensor padding = at::arange(max_seq_len, at::kLong).unsqueeze(0) > new_position_ids.select(1, t - 1).unsqueeze(1);
  images_mask = images_mask.logical_and(padding.logical_not());
  out.embeddings.index_put_({images_mask}, in.image_embeddings.permute({1, 0, 2}).reshape({-1, h}));

  out.labels = at::full({b, max_seq_len}, kIgnoreIndex, at::kLong);
  at::Tensor label_pos = text_position_ids - 1;
  at::Tensor valid_pos = label_pos >= 0;
  at::Tensor label_src = non_image_indices - 1;
  at::Tensor valid_src = label_src >= 0;
  out.labels.index_put_({batch_indices.index({valid_pos}), label_pos.index({valid_pos})},
                        in.labels.index({batch_indices.index({valid_src}), label_src.index({valid_src})}));
  const at::Tensor range = at::arange(b, at::kLong);
  out.labels.index_put_({range, seq_lens - 1}, in.labels.select(1, t - 1));

  out.loss_mask = at::zeros({b, max_seq_len}, in.loss_mask.options());
  out.loss_mask.index_put_({batch_indices, text_position_ids}, in.loss_mask.index({batch_indices, non_image_indices}));
  out.loss_mask.index_put_({images_mask}, at::zeros({}, in.loss_mask.options()));
  const at::Tensor img_idx = image_token_mask.nonzero();
  at::Tensor before = img_idx.select(1, 1) - 1;
  const at::Tensor valid = before >= 0;
  const at::Tensor bb = img_idx.select(1, 0).index({valid});
  before = before.index({valid});
  out.loss_mask.index_put_({bb, new_position_ids.index({bb, before})}, at::zeros({}, in.loss_mask.options()));

  const int64_t limit = in.language_max_sequence_length;
  if (max_seq_len > limit) {
    out.embeddings = out.embeddings.narrow(1, 0, limit);
    out.labels = out.labels.narrow(1, 0, limit);
    out.loss_mask = out.loss_mask.narrow(1, 0, limit);
  }
  return out;
}

SpliceInputs RandomBatch(std::vector<std::vector<int64_t>> ids, std::vector<int64_t> tiles, int64_t img_seq,
                         int64_t max_len, bool pad = false) {
  const int64_t b = ids.size(), t = ids[0].size(), h = 3;
  std::vector<int64_t> flat;
  for (auto& row : ids) flat.insert(flat.end(), row.begin(), row.end());
  int64_t total_tiles = 0;
  for (int64_t v : tiles) total_tiles += v;
  SpliceInputs in;
  in.input_ids = Longs(flat, {b, t});
  in.labels = at::randint(0, 50, {b, t}, at::kLong);
  in.loss_mask = at::randint(0, 2, {b, t}, at::kLong).to(at::kDouble);
  in.language_embeddings = at::randn({b, t, h}, at::kDouble);
  in.image_embeddings = at::randn({img_seq, total_tiles, h}, at::kDouble);
  in.num_image_tiles = at::tensor(tiles, at::kLong);
  in.image_token_index = kImg;
  in.img_seq_len = img_seq;
  in.language_max_sequence_length = max_len;
  in.pad_to_max_length = pad;
  return in;
}

void ExpectSame(const SpliceInputs& in) {
  SpliceOutputs ours = SpliceImageEmbeddings(in);
  SpliceOutputs ref = MegatronReference(in);
  ASSERT_EQ(ours.embeddings.sizes(), ref.embeddings.sizes());
  EXPECT_TRUE(ours.embeddings.equal(ref.embeddings));
  EXPECT_TRUE(ours.labels.equal(ref.labels)) << ours.labels << ref.labels;
  EXPECT_TRUE(ours.loss_mask.equal(ref.loss_mask)) << ours.loss_mask << ref.loss_mask;
}

TEST(SpliceTest, MatchesMegatronOnMixedBatches) {
  // Two images (2 and 3 tiles) in sample 0, a text-only sample, an image first in sample 2 and two adjacent images.
  ExpectSame(RandomBatch({{5, kImg, 6, 7, kImg, 8, 9}, {1, 2, 3, 4, 5, 6, 7}, {kImg, kImg, 3, 4, 5, 6, 0}},
                         {2, 3, 1, 2}, 4, 1000));
  // Image last in the sample: the last label lands on the image's last position.
  ExpectSame(RandomBatch({{5, 6, kImg}, {kImg, 1, 2}}, {1, 3}, 2, 1000));
}

TEST(SpliceTest, TruncatesAndPadsToTheLanguageModelLength) {
  SpliceInputs in = RandomBatch({{5, kImg, 6, 7}, {1, 2, 3, 4}}, {3}, 4, 9);
  ExpectSame(in);
  EXPECT_EQ(SpliceImageEmbeddings(in).embeddings.size(1), 9);
  in.language_max_sequence_length = 20;
  in.pad_to_max_length = true;
  ExpectSame(in);
  SpliceOutputs out = SpliceImageEmbeddings(in);
  EXPECT_EQ(out.embeddings.size(1), 20);
  EXPECT_EQ(out.loss_mask.narrow(1, 15, 5).abs().sum().item<double>(), 0.0);  // sample 0 has 4 + 12 - 1 = 15
}

TEST(SpliceTest, GradientsReachTextAndImageRows) {
  SpliceInputs in = RandomBatch({{5, kImg, 6}, {1, 2, 3}}, {2}, 3, 100);
  in.language_embeddings.set_requires_grad(true);
  in.image_embeddings.set_requires_grad(true);
  SpliceOutputs out = SpliceImageEmbeddings(in);
  out.embeddings.sum().backward();
  // Every image row is used once; every text row except the image-token row once.
  EXPECT_TRUE(in.image_embeddings.grad().equal(at::ones_like(in.image_embeddings)));
  at::Tensor expected = at::ones_like(in.language_embeddings);
  expected[0][1].zero_();
  EXPECT_TRUE(in.language_embeddings.grad().equal(expected));
}

TEST(SpliceTest, TextOnlyBatchKeepsImagesInTheGraph) {
  SpliceInputs in = RandomBatch({{1, 2, 3}}, {}, 3, 100);
  in.image_embeddings = at::randn({3, 1, 3}, at::kDouble).requires_grad_(true);
  SpliceOutputs out = SpliceImageEmbeddings(in);
  EXPECT_TRUE(out.embeddings.equal(in.language_embeddings));
  out.embeddings.sum().backward();
  ASSERT_TRUE(in.image_embeddings.grad().defined());
  EXPECT_EQ(in.image_embeddings.grad().abs().sum().item<double>(), 0.0);
}

TEST(SpliceTest, RejectsTileCountsThatDoNotMatchTheImageTokens) {
  SpliceInputs in = RandomBatch({{5, kImg, 6}, {kImg, 2, 3}}, {1, 1}, 3, 100);
  in.num_image_tiles = Longs({1}, {1});
  EXPECT_THROW(SpliceImageEmbeddings(in), c10::Error);
  in.num_image_tiles = Longs({1, 1, 1}, {3});
  EXPECT_THROW(SpliceImageEmbeddings(in), c10::Error);
  in.num_image_tiles = Longs({1, 2}, {2});  // 3 tiles but the embeddings hold 2
  EXPECT_THROW(SpliceImageEmbeddings(in), c10::Error);
}

}  // namespace
}  // namespace megatron::models::multimodal
