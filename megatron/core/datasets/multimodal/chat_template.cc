#include "megatron/core/datasets/multimodal/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace megatron::datasets::multimodal {
namespace {

const char* ChatRole(Role role) {
  switch (role) {
    case Role::kSystem: return "system";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
  }
  return "user";
}

std::string RenderTurn(const Turn& turn) {
  return absl::StrCat(kImStart, ChatRole(turn.role), "\n", turn.content, kImEnd, "\n");
}

}  // namespace

std::vector<std::string> ChatSpecialTokens() { return {kEndOfText, kImStart, kImEnd, kImageToken}; }

absl::StatusOr<ChatTemplate> ChatTemplate::Create(const tokenizers::ByteLevelBPETokenizer& tokenizer) {
  ChatTemplate t(tokenizer);
  int64_t* ids[] = {&t.eod_id_, &t.im_start_id_, &t.im_end_id_, &t.image_id_};
  const std::vector<std::string> names = ChatSpecialTokens();
  for (size_t i = 0; i < names.size(); ++i) {
    const std::vector<int32_t> encoded = tokenizer.Encode(names[i]);
    const int32_t id = tokenizer.token_to_id(names[i]);
    if (id < 0 || encoded.size() != 1 || encoded[0] != id) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer lacks the special token '", names[i],
                       "' (the chat template needs it as one id; train the tokenizer with ChatSpecialTokens())"));
    }
    *ids[i] = id;
  }
  t.assistant_prefix_len_ = static_cast<int>(t.Encode(absl::StrCat(kImStart, "assistant\n")).size());
  return t;
}

std::vector<int64_t> ChatTemplate::Encode(const std::string& text) const {
  const std::vector<int32_t> ids = tokenizer_.Encode(text);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string ChatTemplate::Decode(const std::vector<int64_t>& ids) const {
  return tokenizer_.Decode(std::vector<int32_t>(ids.begin(), ids.end()));
}

std::string ChatTemplate::Render(const std::vector<Turn>& turns, bool add_generation_prompt) const {
  return RenderChatML(turns, add_generation_prompt);
}

std::string RenderChatML(const std::vector<Turn>& turns, bool add_generation_prompt) {
  std::string out;
  for (const Turn& turn : turns) out += RenderTurn(turn);
  if (add_generation_prompt) absl::StrAppend(&out, kImStart, "assistant\n");
  return out;
}

absl::StatusOr<TokenizedConversation> ChatTemplate::Tokenize(const std::vector<Turn>& turns) const {
  TokenizedConversation out;
  for (size_t i = 0; i < turns.size(); ++i) {
    const Turn& turn = turns[i];
    if (turn.role == Role::kAssistant && absl::StrContains(turn.content, kImageToken)) {
      return absl::InvalidArgumentError(
          absl::StrCat("turn ", i, " (assistant) contains ", kImageToken, "; images belong in user turns"));
    }
    const std::vector<int64_t> ids = Encode(RenderTurn(turn));
    for (size_t k = 0; k < ids.size(); ++k) {
      out.tokens.push_back(ids[k]);
      const bool trained = turn.role == Role::kAssistant && static_cast<int>(k) >= assistant_prefix_len_;
      out.target.push_back(trained ? ids[k] : kIgnoreIndex);
    }
  }
  if (out.tokens != Encode(Render(turns, /*add_generation_prompt=*/false))) {
    return absl::InternalError("per-turn tokenization differs from the whole conversation's; the tokenizer merges "
                               "across a special token");
  }
  return out;
}

std::vector<int64_t> ChatTemplate::EncodePrompt(const std::vector<Turn>& turns) const {
  return Encode(Render(turns, /*add_generation_prompt=*/true));
}

}  // namespace megatron::datasets::multimodal
