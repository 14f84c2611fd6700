// The synthetic shapes dataset: hand-worked captions and questions, rendering, determinism, disjoint splits,
// answer vocabularies, and the written dataset (shards, tokenizer, dataset.json) being usable end to end.
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "megatron/core/datasets/multimodal/chat_template.h"
#include "megatron/core/datasets/multimodal/data_loader.h"
#include "megatron/core/datasets/multimodal/sample.h"
#include "megatron/core/datasets/multimodal/synthetic.h"
#include "megatron/core/datasets/multimodal/task_encoder.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"
#include "megatron/core/utils/file_io.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets::multimodal {
namespace {

Scene TwoShapes() {
  return Scene{{{ShapeKind::kCircle, 0, 0, 0}, {ShapeKind::kSquare, 2, 1, 1}}};  // red circle, blue square
}

TEST(SyntheticTest, CaptionAndQuestionsOfAHandWorkedScene) {
  EXPECT_EQ(Caption(TwoShapes()), "a red circle at top left and a blue square at centre.");
  EXPECT_EQ(Caption(Scene{{{ShapeKind::kTriangle, 3, 2, 2}}}), "a yellow triangle at bottom right.");
  EXPECT_EQ(Caption(Scene{{{ShapeKind::kCircle, 1, 0, 1}, {ShapeKind::kCircle, 1, 1, 0}, {ShapeKind::kSquare, 0, 2, 1}}}),
            "a green circle at top, a green circle at left and a red square at bottom.");
  std::map<std::string, std::string> answers;
  for (const QuestionAnswer& q : AllQuestions(TwoShapes())) {
    EXPECT_EQ(answers.count(q.question), 0u) << "duplicate question " << q.question;
    answers[q.question] = q.answer;
    const std::vector<std::string>& vocab = AnswerVocabulary(q.type);
    EXPECT_NE(std::find(vocab.begin(), vocab.end(), q.answer), vocab.end()) << q.type << ": " << q.answer;
  }
  EXPECT_EQ(answers["How many shapes are there?"], "two");
  EXPECT_EQ(answers["What colour is the circle?"], "red");
  EXPECT_EQ(answers["What colour is the square?"], "blue");
  EXPECT_EQ(answers["What shape is the blue one?"], "square");
  EXPECT_EQ(answers["Is the red circle on the left, in the centre or on the right?"], "left");
  EXPECT_EQ(answers["Is the blue square at the top, in the middle or at the bottom?"], "middle");
  EXPECT_EQ(answers["Is there a blue square?"], "yes");
  EXPECT_EQ(answers["Is there a blue circle?"], "no");
  EXPECT_EQ(answers.count("What colour is the triangle?"), 0u);
  // Two green circles: no colour question about "the circle", no column question about "the green circle".
  std::set<std::string> qs;
  for (const QuestionAnswer& q :
       AllQuestions(Scene{{{ShapeKind::kCircle, 1, 0, 1}, {ShapeKind::kCircle, 1, 1, 0}}})) {
    qs.insert(q.question);
  }
  EXPECT_EQ(qs.count("What colour is the circle?"), 0u);
  EXPECT_EQ(qs.count("What shape is the green one?"), 0u);
  EXPECT_EQ(qs.count("Is the green circle on the left, in the centre or on the right?"), 0u);
  EXPECT_EQ(qs.count("Is there a green circle?"), 0u) << "ambiguous 'a green circle' is fine but not generated";
}

TEST(SyntheticTest, RendersShapesInTheirCells) {
  std::mt19937 rng(1);
  const image::Image img = RenderScene(TwoShapes(), 63, rng);
  ASSERT_EQ(img.height, 63);
  const uint8_t* top_left = img.at(10, 10);  // centre of cell (0, 0): the red circle
  EXPECT_EQ(top_left[0], 220);
  EXPECT_EQ(top_left[1], 40);
  const uint8_t* centre = img.at(31, 31);  // the blue square
  EXPECT_EQ(centre[2], 220);
  const uint8_t* corner = img.at(62, 62);  // empty cell
  EXPECT_EQ(corner[0], 235);
  EXPECT_EQ(corner[1], 235);
}

TEST(SyntheticTest, ChanceLevels) {
  EXPECT_DOUBLE_EQ(ChanceAccuracy("colour"), 0.25);
  EXPECT_DOUBLE_EQ(ChanceAccuracy("shape"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(ChanceAccuracy("exists"), 0.5);
  EXPECT_EQ(ChanceAccuracy("poem"), 0.0);
  EXPECT_EQ(NormalizeAnswer("  Red.\n"), "red");
}

TEST(SyntheticTest, AnswerTallyPerTypeAndOverall) {
  AnswerTally tally;
  tally.Add("colour", " Red.", "red");
  tally.Add("colour", "blue", "red");
  tally.Add("exists", "yes", "yes");
  tally.Add("riddle", "x", "x");
  const std::vector<AnswerTally::Row> rows = tally.Rows();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].type, "colour");
  EXPECT_EQ(rows[0].correct, 1);
  EXPECT_EQ(rows[0].total, 2);
  EXPECT_DOUBLE_EQ(rows[0].chance, 0.25);
  EXPECT_EQ(rows[1].type, "exists");
  EXPECT_EQ(rows[2].type, "riddle");
  EXPECT_EQ(rows[3].type, "all");
  EXPECT_DOUBLE_EQ(rows[3].accuracy, 0.75);
  EXPECT_DOUBLE_EQ(rows[3].chance, (0.25 * 2 + 0.5 + 0) / 4);
  EXPECT_NE(tally.Table().find("colour"), std::string::npos);
}

TEST(SyntheticTest, DeterministicWithDisjointSplits) {
  SyntheticDatasetConfig c;
  c.num_train = 300;
  c.num_valid = 60;
  c.image_size = 48;
  const std::vector<MultimodalSample> train = GenerateSyntheticSplit(c, false);
  const std::vector<MultimodalSample> again = GenerateSyntheticSplit(c, false);
  const std::vector<MultimodalSample> valid = GenerateSyntheticSplit(c, true);
  ASSERT_EQ(train.size(), 300u);
  ASSERT_EQ(valid.size(), 60u);
  for (size_t i = 0; i < train.size(); ++i) {
    EXPECT_EQ(SampleToJson(train[i]), SampleToJson(again[i]));
    EXPECT_EQ(train[i].images, again[i].images);
  }
  std::set<std::string> train_scenes;
  std::map<std::string, int> kinds, types;
  for (const MultimodalSample& s : train) {
    train_scenes.insert(nlohmann::json::parse(s.metadata_json)["scene_caption"].get<std::string>());
    ++kinds[SampleKindName(s.kind)];
    for (const std::string& t : s.question_types) ++types[t];
  }
  for (const MultimodalSample& s : valid) {
    const std::string scene = nlohmann::json::parse(s.metadata_json)["scene_caption"];
    EXPECT_EQ(train_scenes.count(scene), 0u) << "held-out scene in train: " << scene;
  }
  EXPECT_EQ(kinds["caption"], 100);
  EXPECT_EQ(kinds["vqa"], 100);
  EXPECT_EQ(kinds["conversation"], 100);
  for (const std::string& t : QuestionTypes()) EXPECT_GT(types[t], 20) << t;
}

TEST(SyntheticTest, WrittenDatasetLoadsAndEncodes) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/mm";
  SyntheticDatasetConfig c;
  c.num_train = 40;
  c.num_valid = 10;
  c.samples_per_shard = 16;
  c.tokenizer_vocab_size = 400;
  bool written = false;
  ASSERT_TRUE(EnsureSyntheticDataset(dir, c, &written).ok());
  EXPECT_TRUE(written);
  ASSERT_TRUE(EnsureSyntheticDataset(dir, c, &written).ok());
  EXPECT_FALSE(written) << "same config: kept";
  EXPECT_EQ(ListShards(dir, "train")->size(), 3u);
  EXPECT_EQ(ListShards(dir, "valid")->size(), 1u);
  absl::StatusOr<std::vector<MultimodalSample>> train = ReadShards(dir, "train");
  ASSERT_TRUE(train.ok()) << train.status();
  const std::vector<MultimodalSample> generated = GenerateSyntheticSplit(c, false);
  ASSERT_EQ(train->size(), generated.size());
  for (size_t i = 0; i < generated.size(); ++i) {
    EXPECT_EQ(SampleToJson((*train)[i]), SampleToJson(generated[i]));
    EXPECT_EQ((*train)[i].images, generated[i].images);
  }
  absl::StatusOr<tokenizers::ByteLevelBPETokenizer> tok = tokenizers::ByteLevelBPETokenizer::Load(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_LE(tok->vocab_size(), 400);  // training stops early when no pair is seen twice
  EXPECT_GT(tok->vocab_size(), 300);
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Create(*tok);
  ASSERT_TRUE(chat.ok()) << chat.status();
  TaskEncoderConfig ec;
  ec.tile_processor = image::TileProcessor(64, image::Statistics::kSiglip);
  ec.tokens_per_tile = 16;
  ec.decoder_seq_length = 256;
  const TaskEncoder encoder(*chat, ec);
  std::vector<EncodedSample> encoded;
  for (const MultimodalSample& s : *train) {
    absl::StatusOr<EncodedSample> e = encoder.Encode(s);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_LT(e->total_len, 200) << s.key;
    encoded.push_back(*e);
  }
  const MultimodalBatch b = encoder.Batch(encoded);
  EXPECT_EQ(b.images.size(0), 40);
  EXPECT_GT(b.loss_mask.sum().item<float>(), 40.0f);
  const nlohmann::json info = nlohmann::json::parse(*utils::ReadFile(dir + "/dataset.json"));
  EXPECT_EQ(info["splits"]["train"]["samples"], 40);
  EXPECT_DOUBLE_EQ(info["question_types"]["colour"]["chance"].get<double>(), 0.25);
  EXPECT_EQ(info["question_types"]["count"]["answers"], nlohmann::json({"one", "two", "three"}));
  // Single-word answers stay short in tokens (the vocabulary was trained on them).
  EXPECT_LE(chat->Encode("yellow").size(), 2u);

  // The loader: every sample once per epoch, a new order each epoch, the same order for the same seed, and
  // resuming from a saved state continues identically.
  LoaderConfig lc;
  lc.micro_batch_size = 16;  // 40 samples: batches of 16, 16, 8 per epoch
  absl::StatusOr<MultimodalLoader> loader = MultimodalLoader::Open(dir, "train", encoder, lc);
  ASSERT_TRUE(loader.ok()) << loader.status();
  std::vector<std::vector<std::string>> epochs(2);
  MultimodalLoader::State saved;
  std::vector<std::string> after_saved;
  for (int step = 0; step < 6; ++step) {
    if (step == 4) saved = loader->state();
    absl::StatusOr<MultimodalBatch> b = loader->Next();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->tokens.size(0), step % 3 == 2 ? 8 : 16);
    for (const std::string& k : b->keys) epochs[step / 3].push_back(k);
    if (step >= 4) after_saved.insert(after_saved.end(), b->keys.begin(), b->keys.end());
  }
  for (auto& e : epochs) {
    std::vector<std::string> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::unique(sorted.begin(), sorted.end()) - sorted.begin(), 40);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  absl::StatusOr<MultimodalLoader> again = MultimodalLoader::Open(dir, "train", encoder, lc);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->Next()->keys, std::vector<std::string>(epochs[0].begin(), epochs[0].begin() + 16));
  again->set_state(saved);
  std::vector<std::string> resumed;
  for (int step = 0; step < 2; ++step) {
    const std::vector<std::string> keys = again->Next()->keys;
    resumed.insert(resumed.end(), keys.begin(), keys.end());
  }
  EXPECT_EQ(resumed, after_saved);
  EXPECT_EQ(loader->skipped(), 0);

  // Packing: rows never exceed the capacity; each epoch still covers every sample once.
  lc.packing_capacity = 400;
  absl::StatusOr<MultimodalLoader> packed = MultimodalLoader::Open(dir, "train", encoder, lc);
  ASSERT_TRUE(packed.ok());
  std::set<std::string> seen;
  while (packed->state().epoch == 0) {
    absl::StatusOr<MultimodalBatch> b = packed->Next();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->tokens.size(0), 1);
    EXPECT_LE(b->cu_lengths[-1].item<int32_t>(), 400);
    EXPECT_EQ(b->cu_token_lengths[-1].item<int32_t>(), b->tokens.size(1));
    for (const std::string& k : b->keys) EXPECT_TRUE(seen.insert(k).second) << k;
    if (seen.size() == 40) break;
  }
  EXPECT_EQ(seen.size(), 40u);
  EXPECT_EQ(MultimodalLoader::Open(dir, "test", encoder, lc).status().code(), absl::StatusCode::kNotFound);

  c.seed = 99;  // a different config is rewritten
  ASSERT_TRUE(EnsureSyntheticDataset(dir, c, &written).ok());
  EXPECT_TRUE(written);
}

}  // namespace
}  // namespace megatron::datasets::multimodal
