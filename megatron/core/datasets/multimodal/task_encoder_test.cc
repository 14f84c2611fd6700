// Chat template against transformers' apply_chat_template (Qwen2's ChatML) and HF tokenizers ids
// (testdata/make_fixtures.py); task encoder, batching and packing against hand-worked examples.
#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "megatron/core/datasets/multimodal/chat_template.h"
#include "megatron/core/datasets/multimodal/task_encoder.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"
#include "megatron/core/utils/file_io.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets::multimodal {
namespace {

const std::string kDir = "megatron/core/datasets/multimodal/testdata/";

nlohmann::json ChatFixture() { return nlohmann::json::parse(*utils::ReadFile(kDir + "chat.json")); }

ChatTemplate FixtureChat() {
  absl::StatusOr<tokenizers::ByteLevelBPETokenizer> tok =
      tokenizers::ByteLevelBPETokenizer::Load(kDir + "chat_tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Create(*tok);
  EXPECT_TRUE(chat.ok()) << chat.status();
  return *chat;
}

std::vector<Turn> FixtureTurns(const nlohmann::json& messages) {
  std::vector<Turn> turns;
  for (const auto& m : messages) {
    const std::string role = m["role"];
    turns.push_back({role == "system" ? Role::kSystem : role == "user" ? Role::kUser : Role::kAssistant,
                     m["content"].get<std::string>()});
  }
  return turns;
}

std::vector<int64_t> Ints(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

std::vector<int64_t> Row(const at::Tensor& t, int64_t r) {
  const at::Tensor row = t[r].contiguous();
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

TEST(ChatTemplateTest, MatchesTransformersChatMLAndHfTokenIds) {
  const nlohmann::json f = ChatFixture();
  const ChatTemplate chat = FixtureChat();
  const std::vector<Turn> turns = FixtureTurns(f["messages"]);
  EXPECT_EQ(chat.Render(turns, false), f["text"].get<std::string>());
  absl::StatusOr<TokenizedConversation> tok = chat.Tokenize(turns);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->tokens, Ints(f["ids"]));
  EXPECT_EQ(tok->target, Ints(f["target"]));
  EXPECT_EQ(chat.assistant_prefix_len(), f["assistant_prefix_len"].get<int>());
  const std::vector<Turn> prompt_turns(turns.begin(), turns.begin() + 2);
  EXPECT_EQ(chat.Render(prompt_turns, true), f["prompt"].get<std::string>());
  EXPECT_EQ(chat.EncodePrompt(prompt_turns), Ints(f["prompt_ids"]));
  // Ids 0..3 are the special tokens in ChatSpecialTokens() order.
  EXPECT_EQ(chat.eod_id(), 0);
  EXPECT_EQ(chat.im_start_id(), 1);
  EXPECT_EQ(chat.im_end_id(), 2);
  EXPECT_EQ(chat.image_token_id(), 3);
}

TEST(ChatTemplateTest, RejectsMissingSpecialTokensAndImagesInAnswers) {
  tokenizers::BpeTrainerOptions options;
  options.vocab_size = 260;
  absl::StatusOr<tokenizers::ByteLevelBPETokenizer> plain = tokenizers::ByteLevelBPETokenizer::Train({"abc"}, options);
  ASSERT_TRUE(plain.ok());
  absl::StatusOr<ChatTemplate> none = ChatTemplate::Create(*plain);
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(absl::StrContains(none.status().message(), "<|im_start|>")) << none.status();
  const ChatTemplate chat = FixtureChat();
  EXPECT_FALSE(chat.Tokenize({{Role::kUser, "hi"}, {Role::kAssistant, "<image>"}}).ok());
}

TaskEncoderConfig SmallConfig() {
  TaskEncoderConfig c;
  c.decoder_seq_length = 128;
  c.tokens_per_tile = 4;
  c.tile_processor = image::TileProcessor(8, image::Statistics::kSiglip);
  c.system_message = "Answer the questions.";
  return c;
}

MultimodalSample Vqa(const std::string& key, int images) {
  MultimodalSample s;
  s.key = key;
  s.kind = SampleKind::kVqa;
  s.question = "What colour is the circle?";
  s.answer = "red";
  for (int i = 0; i < images; ++i) s.images.push_back(image::Image(10, 14, static_cast<uint8_t>(40 + i)));
  return s;
}

TEST(TaskEncoderTest, WorkedVqaExample) {
  // The VQA sample renders as the fixture conversation's first three turns, so its tokens and target are the
  // first n fixture ids, n = up to and including the first assistant turn's "<|im_end|>\n".
  const nlohmann::json f = ChatFixture();
  const TaskEncoder encoder(FixtureChat(), SmallConfig());
  absl::StatusOr<EncodedSample> e = encoder.Encode(Vqa("s0", 1));
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<int64_t> ids = Ints(f["ids"]), target = Ints(f["target"]);
  const size_t n = e->tokens.size();
  ASSERT_LT(n, ids.size());
  EXPECT_EQ(e->tokens, std::vector<int64_t>(ids.begin(), ids.begin() + n));
  EXPECT_EQ(e->target, std::vector<int64_t>(target.begin(), target.begin() + n));
  EXPECT_EQ(e->tokens[n - 2], 2) << "ends with <|im_end|> \\n";
  EXPECT_EQ(e->num_tiles, std::vector<int32_t>{1});
  EXPECT_EQ(e->total_len, static_cast<int64_t>(n) + 1 * 4 - 1);
  ASSERT_EQ(e->tiles.size(), 1u);
  EXPECT_TRUE(e->tiles[0].equal(image::Preprocess(image::Image(10, 14, 40), SmallConfig().tile_processor)));

  // Batch with a longer text-only sample: padding, shifted labels, mask, image bookkeeping.
  MultimodalSample text = Vqa("s1", 0);
  text.question = "What colour is the circle? And the square?";
  absl::StatusOr<EncodedSample> t = encoder.Encode(text);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_GT(t->tokens.size(), n);
  const MultimodalBatch b = encoder.Batch({*e, *t});
  const int64_t L = static_cast<int64_t>(t->tokens.size());
  EXPECT_EQ(b.tokens.sizes().vec(), (std::vector<int64_t>{2, L}));
  std::vector<int64_t> want_tokens = e->tokens, want_labels;
  want_tokens.resize(L, encoder.chat().pad_id());
  for (int64_t i = 0; i < L; ++i) want_labels.push_back(i + 1 < static_cast<int64_t>(n) ? e->target[i + 1] : -100);
  EXPECT_EQ(Row(b.tokens, 0), want_tokens);
  EXPECT_EQ(Row(b.labels, 0), want_labels);
  // Trained labels: "red", "<|im_end|>", "\n" (three tokens here), predicted from the three tokens before them.
  EXPECT_EQ(b.loss_mask[0].sum().item<float>(), 3.0f);
  EXPECT_EQ(b.loss_mask[0][n - 2].item<float>(), 1.0f);
  EXPECT_EQ(b.loss_mask[0][n - 1].item<float>(), 0.0f);
  EXPECT_TRUE(b.loss_mask.eq(b.labels.ne(-100).to(at::kFloat)).all().item<bool>());
  EXPECT_EQ(b.images.sizes().vec(), (std::vector<int64_t>{1, 3, 8, 8}));
  EXPECT_EQ(b.num_image_tiles.scalar_type(), at::kInt);
  EXPECT_EQ(b.num_image_tiles.numel(), 1);
  const int64_t image_at = std::find(ids.begin(), ids.end(), 3) - ids.begin();
  EXPECT_EQ(b.image_positions.sizes().vec(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(b.image_positions[0][0].item<int64_t>(), 0);
  EXPECT_EQ(b.image_positions[0][1].item<int64_t>(), image_at);
  EXPECT_EQ(b.tokens[0][image_at].item<int64_t>(), encoder.chat().image_token_id());
}

TEST(TaskEncoderTest, ImageTagRules) {
  const TaskEncoder encoder(FixtureChat(), SmallConfig());
  // Fewer tags than images: missing tags go to the front of the first user turn.
  MultimodalSample two = Vqa("two", 2);
  absl::StatusOr<std::vector<Turn>> turns = encoder.ToConversation(two);
  ASSERT_TRUE(turns.ok());
  EXPECT_EQ((*turns)[1].content, "<image>\n<image>\nWhat colour is the circle?");
  // Text only: tags removed.
  MultimodalSample none = Vqa("none", 0);
  none.question = "<image>\nWhat?";
  turns = encoder.ToConversation(none);
  ASSERT_TRUE(turns.ok());
  EXPECT_EQ((*turns)[1].content, "What?");
  // More tags than images: error.
  MultimodalSample many = Vqa("many", 1);
  many.question = "<image><image> What?";
  EXPECT_FALSE(encoder.ToConversation(many).ok());
  // Captions get the caption prompt; the system turn is not duplicated.
  MultimodalSample cap;
  cap.key = "c";
  cap.kind = SampleKind::kCaption;
  cap.caption = "a red circle.";
  cap.images = {image::Image(4, 4)};
  turns = encoder.ToConversation(cap);
  ASSERT_TRUE(turns.ok());
  ASSERT_EQ(turns->size(), 3u);
  EXPECT_EQ((*turns)[0], (Turn{Role::kSystem, "Answer the questions."}));
  EXPECT_EQ((*turns)[1], (Turn{Role::kUser, "<image>\nDescribe the image."}));
  EXPECT_EQ((*turns)[2], (Turn{Role::kAssistant, "a red circle."}));
  MultimodalSample conv;
  conv.key = "v";
  conv.kind = SampleKind::kConversation;
  conv.conversation = {{Role::kSystem, "Be brief."}, {Role::kUser, "hi"}, {Role::kAssistant, "red"}};
  turns = encoder.ToConversation(conv);
  ASSERT_TRUE(turns.ok());
  EXPECT_EQ(turns->size(), 3u);
}

TEST(TaskEncoderTest, TilingAndTheTileBudget) {
  TaskEncoderConfig c = SmallConfig();
  c.use_tiling = true;
  c.tiling.tile_size = 8;
  c.tiling.max_tiles = 6;
  MultimodalSample wide = Vqa("wide", 1);
  wide.images = {image::Image(8, 24, 77)};  // 3:1 -> grid (3, 1) + thumbnail = 4 tiles
  absl::StatusOr<EncodedSample> e = TaskEncoder(FixtureChat(), c).Encode(wide);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->num_tiles, std::vector<int32_t>{4});
  EXPECT_EQ(e->total_len, static_cast<int64_t>(e->tokens.size()) + 4 * 4 - 1);
  // Budget: decoder_seq_length - text - 4 = 8 image tokens = 2 tiles: 6 -> 4 gives (3,1)+thumb = 4 still,
  // 4 -> 2 gives (2,1)+thumb = 3, 2 -> 1 gives one tile.
  c.decoder_seq_length = static_cast<int>(e->tokens.size()) + 4 + 8;
  absl::StatusOr<EncodedSample> small = TaskEncoder(FixtureChat(), c).Encode(wide);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->num_tiles, std::vector<int32_t>{1});
  c.decoder_seq_length = static_cast<int>(e->tokens.size()) + 4 + 12;
  small = TaskEncoder(FixtureChat(), c).Encode(wide);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->num_tiles, std::vector<int32_t>{3});
}

TEST(TaskEncoderTest, RejectsSamplesWithoutTrainedTokensInTheSequence) {
  TaskEncoderConfig c = SmallConfig();
  c.tokens_per_tile = 200;  // the image alone overflows decoder_seq_length = 128
  absl::StatusOr<EncodedSample> e = TaskEncoder(FixtureChat(), c).Encode(Vqa("big", 1));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(e.status().message(), "sample 'big'")) << e.status();
}

TEST(TaskEncoderTest, TruncationDropsImagesWhoseTokenIsCut) {
  TaskEncoderConfig c = SmallConfig();
  const TaskEncoder full(FixtureChat(), c);
  absl::StatusOr<EncodedSample> e = full.Encode(Vqa("s", 1));
  ASSERT_TRUE(e.ok());
  const int64_t image_at = std::find(e->tokens.begin(), e->tokens.end(), 3) - e->tokens.begin();
  c.batch_seq_length = static_cast<int>(image_at);  // cuts just before <image>
  const MultimodalBatch b = TaskEncoder(FixtureChat(), c).Batch({*e});
  EXPECT_EQ(b.tokens.size(1), image_at);
  EXPECT_EQ(b.images.size(0), 0);
  EXPECT_EQ(b.num_image_tiles.numel(), 0);
  // The last kept position's label is the next (cut) token's target, as Megatron's labels[:, 1:L+1].
  EXPECT_EQ(b.labels[0][image_at - 1].item<int64_t>(), e->target[image_at]);
  c.batch_seq_length = static_cast<int>(image_at) + 1;  // keeps <image>
  EXPECT_EQ(TaskEncoder(FixtureChat(), c).Batch({*e}).images.size(0), 1);
}

TEST(PackingTest, GreedyKnapsackTakesTheLargestFittingItem) {
  absl::StatusOr<std::vector<std::vector<int>>> packs = GreedyKnapsack({5, 3, 8, 2, 7}, 10);
  ASSERT_TRUE(packs.ok());
  // Sorted sizes 2 3 5 7 8: {8, 2}, {7, 3}, {5}.
  EXPECT_EQ(*packs, (std::vector<std::vector<int>>{{2, 3}, {4, 1}, {0}}));
  packs = GreedyKnapsack({4, 4, 4}, 8);
  ASSERT_TRUE(packs.ok());
  EXPECT_EQ(*packs, (std::vector<std::vector<int>>{{2, 1}, {0}}));
  EXPECT_TRUE(GreedyKnapsack({}, 8)->empty());
  EXPECT_FALSE(GreedyKnapsack({9}, 8).ok());
}

TEST(PackingTest, PackedBatchKeepsSamplesApart) {
  const TaskEncoder encoder(FixtureChat(), SmallConfig());
  absl::StatusOr<EncodedSample> a = encoder.Encode(Vqa("a", 1));
  absl::StatusOr<EncodedSample> b = encoder.Encode(Vqa("b", 2));
  ASSERT_TRUE(a.ok() && b.ok());
  const MultimodalBatch p = encoder.PackedBatch({*a, *b});
  const int64_t na = a->tokens.size(), nb = b->tokens.size();
  EXPECT_EQ(p.tokens.sizes().vec(), (std::vector<int64_t>{1, na + nb}));
  EXPECT_EQ(Row(p.cu_token_lengths.to(at::kLong).unsqueeze(0), 0), (std::vector<int64_t>{0, na, na + nb}));
  EXPECT_EQ(Row(p.cu_lengths.to(at::kLong).unsqueeze(0), 0),
            (std::vector<int64_t>{0, a->total_len, a->total_len + b->total_len}));
  EXPECT_EQ(p.max_length, std::max(a->total_len, b->total_len));
  EXPECT_EQ(p.labels[0][na - 1].item<int64_t>(), -100) << "a's last label must not be b's first token";
  EXPECT_EQ(p.labels[0][na - 2].item<int64_t>(), a->target[na - 1]);
  EXPECT_EQ(p.images.size(0), 3);
  EXPECT_EQ(p.num_image_tiles.numel(), 3);
  EXPECT_EQ(p.image_positions[1][1].item<int64_t>(), na + (std::find(b->tokens.begin(), b->tokens.end(), 3) -
                                                           b->tokens.begin()));
  EXPECT_EQ(p.loss_mask.sum().item<float>(), 6.0f);
}

TEST(PackingTest, PackIntoBatchesRespectsCapacity) {
  const TaskEncoder encoder(FixtureChat(), SmallConfig());
  std::vector<EncodedSample> encoded;
  for (int i = 0; i < 5; ++i) encoded.push_back(*encoder.Encode(Vqa("s" + std::to_string(i), i % 3)));
  const int64_t capacity = encoded[2].total_len + encoded[0].total_len;
  absl::StatusOr<std::vector<MultimodalBatch>> batches = PackIntoBatches(encoder, encoded, capacity);
  ASSERT_TRUE(batches.ok()) << batches.status();
  size_t samples = 0;
  for (const MultimodalBatch& b : *batches) {
    EXPECT_LE(b.cu_lengths[-1].item<int32_t>(), capacity);
    samples += b.keys.size();
  }
  EXPECT_EQ(samples, 5u);
  EXPECT_LT(batches->size(), 5u);
  EXPECT_FALSE(PackIntoBatches(encoder, encoded, 10).ok());
}

TEST(TaskEncoderTest, GenerationPrompt) {
  const nlohmann::json f = ChatFixture();
  const TaskEncoder encoder(FixtureChat(), SmallConfig());
  absl::StatusOr<MultimodalBatch> p = encoder.EncodePrompt({image::Image(9, 9, 5)}, "What colour is the circle?");
  ASSERT_TRUE(p.ok()) << p.status();
  // The fixture's prompt: system + "<image>\nWhat colour is the circle?" + generation prompt, via transformers.
  EXPECT_EQ(Row(p->tokens, 0), Ints(f["prompt_ids"]));
  EXPECT_EQ(p->loss_mask.sum().item<float>(), 0.0f);
  EXPECT_EQ(p->images.size(0), 1);
  EXPECT_EQ(p->num_image_tiles.numel(), 1);
}

}  // namespace
}  // namespace megatron::datasets::multimodal
