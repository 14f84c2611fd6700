#include "megatron/core/tokenizers/bpe_tokenizer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "megatron/core/tokenizers/unicode_classes.h"

namespace megatron::tokenizers {
namespace {

using internal::CharClass;
using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------------------------
// GPT-2's byte <-> unicode alphabet (`bytes_to_unicode` in openai/gpt-2 encoder.py): printable Latin-1 bytes stand
// for themselves, the other 68 bytes are shifted to U+0100.. in increasing byte order, so every token is
// printable text in the vocab file.

struct ByteAlphabet {
  std::array<std::string, 256> byte_to_char;  // UTF-8 of the character that stands for each byte
  std::array<int16_t, 324> char_to_byte;      // inverse, indexed by code point; -1 where no byte maps
  std::array<uint8_t, 256> id_order;          // bytes sorted by their character (GPT-2's vocab order)
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet* alphabet = [] {
    auto* a = new ByteAlphabet;
    a->char_to_byte.fill(-1);
    std::array<char32_t, 256> cp{};
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
      internal::AppendUtf8(cp[b], &a->byte_to_char[b]);
      a->char_to_byte[cp[b]] = static_cast<int16_t>(b);
    }
    int n = 0;
    for (char32_t c = 0; c < a->char_to_byte.size(); ++c) {
      if (a->char_to_byte[c] >= 0) a->id_order[n++] = static_cast<uint8_t>(a->char_to_byte[c]);
    }
    return a;
  }();
  return *alphabet;
}

std::string BytesToTokenString(std::string_view bytes) {
  const ByteAlphabet& a = Alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += a.byte_to_char[static_cast<uint8_t>(c)];
  return out;
}

// What HF's ByteLevel decoder emits for one token: its bytes if every character is in the alphabet, else the
// token's own UTF-8 (this is how an added token such as "<sep token>" survives decoding).
std::string DecoderBytes(std::string_view token) {
  const ByteAlphabet& a = Alphabet();
  std::string out;
  size_t pos = 0;
  while (pos < token.size()) {
    size_t length;
    const char32_t cp = internal::DecodeUtf8(token, pos, &length);
    if (cp >= a.char_to_byte.size() || a.char_to_byte[cp] < 0) return std::string(token);
    out.push_back(static_cast<char>(a.char_to_byte[cp]));
    pos += length;
  }
  return out;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length;
    if (internal::DecodeUtf8(text, pos, &length) == internal::kInvalidCodePoint) return false;
    pos += length;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Pre-tokenization: the GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// by hand. At each position the first alternative that matches wins (regex alternation), so: contractions;
// else an optional U+0020 plus a maximal run of one class (letters, numbers or "other"); else a whitespace run,
// which gives back its last character when a non-space follows (that is what (?!\S) does after backtracking),
// so " word" stays together; a single whitespace character before a non-space is the \s+ fallback.

CharClass ClassAt(std::string_view text, size_t pos, size_t* length) {
  const auto b = static_cast<uint8_t>(text[pos]);
  if (b < 0x80) {
    *length = 1;
    return internal::ClassifyCodePoint(b);
  }
  const char32_t cp = internal::DecodeUtf8(text, pos, length);
  return cp == internal::kInvalidCodePoint ? CharClass::kOther : internal::ClassifyCodePoint(cp);
}

template <typename Emit>
void PreTokenize(std::string_view text, Emit&& emit) {
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (text[i] == '\'' && i + 1 < n) {
      const char c = text[i + 1];
      if (c == 's' || c == 't' || c == 'm' || c == 'd') {
        emit(text.substr(i, 2));
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        const std::string_view two = text.substr(i + 1, 2);
        if (two == "re" || two == "ve" || two == "ll") {
          emit(text.substr(i, 3));
          i += 3;
          continue;
        }
      }
    }
    size_t length;
    CharClass cls = ClassAt(text, i, &length);
    size_t run_start = i;  // where the class run starts (after the optional leading space)
    if (text[i] == ' ' && i + 1 < n) {
      size_t next_length;
      const CharClass next = ClassAt(text, i + 1, &next_length);
      if (next != CharClass::kWhiteSpace) {
        cls = next;
        run_start = i + 1;
        length = next_length;
      }
    }
    if (cls != CharClass::kWhiteSpace) {
      size_t end = run_start + length;
      while (end < n) {
        size_t l;
        if (ClassAt(text, end, &l) != cls) break;
        end += l;
      }
      emit(text.substr(i, end - i));
      i = end;
      continue;
    }
    size_t end = i;
    size_t last_start = i;
    int count = 0;
    while (end < n) {
      size_t l;
      if (ClassAt(text, end, &l) != CharClass::kWhiteSpace) break;
      last_start = end;
      end += l;
      ++count;
    }
    if (end < n && count >= 2) end = last_start;  // \s+(?!\S): leave the last one to prefix the next word
    emit(text.substr(i, end - i));
    i = end;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Added tokens are found by leftmost-longest verbatim match. Vocabularies hold few of them, so candidates are
// bucketed by first byte and tried longest first; text without any candidate first byte is scanned quickly.

class AddedTokenMatcher {
 public:
  void Add(const std::string& content, int32_t id) {
    auto& bucket = by_first_byte_[static_cast<uint8_t>(content[0])];
    bucket.push_back({content, id});
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const Entry& a, const Entry& b) { return a.content.size() > b.content.size(); });
    empty_ = false;
  }

  // Calls on_text(piece) for the text between matches (never empty) and on_token(id) for each match.
  template <typename OnText, typename OnToken>
  void Split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    if (empty_) {
      if (!text.empty()) on_text(text);
      return;
    }
    size_t start = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto& bucket = by_first_byte_[static_cast<uint8_t>(text[i])];
      for (const Entry& e : bucket) {
        if (text.compare(i, e.content.size(), e.content) != 0) continue;
        if (i > start) on_text(text.substr(start, i - start));
        on_token(e.id);
        i += e.content.size();
        start = i;
        --i;  // the loop's ++i
        break;
      }
    }
    if (start < text.size()) on_text(text.substr(start));
  }

 private:
  struct Entry {
    std::string content;
    int32_t id;
  };
  std::array<std::vector<Entry>, 256> by_first_byte_;
  bool empty_ = true;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// A short rendering of a JSON value for error messages.
std::string Describe(const Json& value) {
  std::string s = value.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

}  // namespace

// -----------------------------------------------------------------------------------------------------------------

struct AddedTokenInfo {
  std::string content;
  int32_t id;
  bool special;
  bool normalized;
};

struct ByteLevelBPETokenizer::Impl {
  // What the file says (and Save writes back).
  std::vector<std::string> vocab;                   // id -> token string as in tokenizer.json; "" = unused id
  std::vector<bool> in_model_vocab;                 // id is in model.vocab (not only an added token)
  std::vector<std::pair<int32_t, int32_t>> merges;  // in rank order
  std::vector<AddedTokenInfo> added_tokens;         // in file order
  bool ignore_merges = false;
  Json pre_tokenizer, post_processor, decoder;     // written back verbatim: they only affect offsets

  // Derived by Finalize().
  std::unordered_map<std::string, int32_t> model_token_to_id;
  std::unordered_map<std::string, int32_t> added_token_to_id;
  std::array<int32_t, 256> byte_ids{};  // id of each single-byte token, -1 if absent
  struct MergeRule {
    int32_t rank;
    int32_t new_id;
  };
  std::unordered_map<uint64_t, MergeRule> merge_rules;
  std::vector<std::string> decoded;  // id -> the bytes the ByteLevel decoder emits for it
  AddedTokenMatcher unnormalized_matcher, normalized_matcher;
  int32_t eod_id = -1;

  // Word -> ids cache. Pre-tokenized words repeat heavily (Zipf), so most encodes are one lookup.
  static constexpr size_t kMaxCachedWordBytes = 64;
  static constexpr size_t kCacheCapacity = 1 << 17;
  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  absl::Status Finalize(const std::string& where);
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeText(std::string_view text, std::vector<int32_t>* out) const;
};

absl::Status ByteLevelBPETokenizer::Impl::Finalize(const std::string& where) {
  model_token_to_id.clear();
  added_token_to_id.clear();
  for (size_t id = 0; id < vocab.size(); ++id) {
    if (in_model_vocab[id]) model_token_to_id.emplace(vocab[id], static_cast<int32_t>(id));
  }
  const ByteAlphabet& alphabet = Alphabet();
  for (int b = 0; b < 256; ++b) {
    auto it = model_token_to_id.find(alphabet.byte_to_char[b]);
    byte_ids[b] = it == model_token_to_id.end() ? -1 : it->second;
  }
  merge_rules.clear();
  merge_rules.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto [a, b] = merges[rank];
    auto it = model_token_to_id.find(vocab[a] + vocab[b]);
    if (it == model_token_to_id.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": field 'model.merges[", rank, "]': merged token '",
                                                     vocab[a], vocab[b], "' is not in model.vocab"));
    }
    merge_rules[PairKey(a, b)] = MergeRule{static_cast<int32_t>(rank), it->second};  // later duplicates win, as in HF
  }
  decoded.assign(vocab.size(), std::string());
  for (size_t id = 0; id < vocab.size(); ++id) decoded[id] = DecoderBytes(vocab[id]);
  unnormalized_matcher = AddedTokenMatcher();
  normalized_matcher = AddedTokenMatcher();
  for (const AddedTokenInfo& t : added_tokens) {
    added_token_to_id[t.content] = t.id;
    (t.normalized ? normalized_matcher : unnormalized_matcher).Add(t.content, t.id);
  }
  auto eod = added_token_to_id.find("<|endoftext|>");
  if (eod != added_token_to_id.end()) {
    eod_id = eod->second;
  } else {
    auto m = model_token_to_id.find("<|endoftext|>");
    eod_id = m == model_token_to_id.end() ? -1 : m->second;
  }
  cache.clear();
  return absl::OkStatus();
}

void ByteLevelBPETokenizer::Impl::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.size() == 1) {
    if (const int32_t id = byte_ids[static_cast<uint8_t>(word[0])]; id >= 0) out->push_back(id);
    return;
  }
  if (ignore_merges) {
    auto it = model_token_to_id.find(BytesToTokenString(word));
    if (it != model_token_to_id.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  std::string key;
  if (cacheable) {
    key.assign(word);
    std::shared_lock lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }

  // HF's BPE::merge_word: a doubly linked list of symbols and a min-heap of candidate merges ordered by (rank,
  // position). A popped candidate is stale if its left symbol was merged away or its pair no longer produces
  // the candidate's token; merging pushes the two pairs the new symbol forms with its neighbours.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // "lower priority than": max-heap -> smallest (rank, pos) on top
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  for (char c : word) {
    const int32_t id = byte_ids[static_cast<uint8_t>(c)];
    if (id < 0) continue;  // no unk token: HF drops the character
    const int32_t pos = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, pos - 1, pos + 1, true});
  }
  if (!symbols.empty()) symbols.back().next = -1;
  const auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merge_rules.find(PairKey(symbols[left].id, symbols[right].id));
    if (it == merge_rules.end()) return;
    heap.push_back({it->second.rank, left, it->second.new_id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) push_pair(pos);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merge_rules.find(PairKey(left.id, right.id));
    if (it == merge_rules.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  const size_t first = out->size();
  for (int32_t pos = symbols.empty() ? -1 : 0; pos >= 0; pos = symbols[pos].next) out->push_back(symbols[pos].id);

  if (cacheable) {
    std::unique_lock lock(cache_mutex);
    if (cache.size() < kCacheCapacity) {
      cache.emplace(std::move(key), std::vector<int32_t>(out->begin() + first, out->end()));
    }
  }
}

void ByteLevelBPETokenizer::Impl::EncodeText(std::string_view text, std::vector<int32_t>* out) const {
  const auto encode_plain = [&](std::string_view piece) {
    PreTokenize(piece, [&](std::string_view word) { EncodeWord(word, out); });
  };
  const auto push_id = [&](int32_t id) { out->push_back(id); };
  // HF matches the unnormalized added tokens on the raw text first, then the normalized ones on what is left.
  unnormalized_matcher.Split(
      text, [&](std::string_view piece) { normalized_matcher.Split(piece, encode_plain, push_id); }, push_id);
}

// -----------------------------------------------------------------------------------------------------------------
// Public API.

std::vector<int32_t> ByteLevelBPETokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  impl_->EncodeText(text, &ids);
  return ids;
}

std::string ByteLevelBPETokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id >= 0 && static_cast<size_t>(id) < impl_->decoded.size()) bytes += impl_->decoded[id];
  }
  return internal::Utf8Lossy(bytes);
}

int ByteLevelBPETokenizer::vocab_size() const { return static_cast<int>(impl_->vocab.size()); }

int ByteLevelBPETokenizer::num_merges() const { return static_cast<int>(impl_->merges.size()); }

int32_t ByteLevelBPETokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  if (auto it = impl_->added_token_to_id.find(key); it != impl_->added_token_to_id.end()) return it->second;
  if (auto it = impl_->model_token_to_id.find(key); it != impl_->model_token_to_id.end()) return it->second;
  return -1;
}

const std::string& ByteLevelBPETokenizer::id_to_token(int32_t id) const {
  static const std::string* const kEmpty = new std::string();
  if (id < 0 || static_cast<size_t>(id) >= impl_->vocab.size()) return *kEmpty;
  return impl_->vocab[id];
}

int32_t ByteLevelBPETokenizer::eod_id() const { return impl_->eod_id; }

// -----------------------------------------------------------------------------------------------------------------
// Training.

namespace {

Json DefaultByteLevelSection(bool add_prefix_space) {
  Json j;
  j["type"] = "ByteLevel";
  j["add_prefix_space"] = add_prefix_space;
  j["trim_offsets"] = true;
  j["use_regex"] = true;
  return j;
}

// The incremental BPE trainer. Words are the distinct pre-tokenized strings with their counts; a pair's count is
// the sum over words of (occurrences in the word) x (word count). Merging a pair only touches the words that
// contain it (pair_words), and the count changes are applied as deltas. The heap holds possibly stale entries
// (a pair's count can drop after it was pushed); an entry is trusted only if its count equals the live count,
// and a too-high one is re-pushed with the live count. Every count increase pushes a fresh entry, so the live
// maximum is always represented.
class BpeTrainer {
 public:
  BpeTrainer(std::vector<std::string>* tokens, std::vector<std::pair<int32_t, int32_t>>* merges)
      : tokens_(*tokens), merges_(*merges) {
    for (size_t id = 0; id < tokens_.size(); ++id) token_ids_.emplace(tokens_[id], static_cast<int32_t>(id));
  }

  void AddWord(std::vector<int32_t> symbols, int64_t count) {
    const auto w = static_cast<int32_t>(words_.size());
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = PairKey(symbols[i], symbols[i + 1]);
      pair_counts_[key] += count;
      pair_words_[key].push_back(w);
    }
    words_.push_back({std::move(symbols), count});
  }

  void Run(int vocab_size, int64_t min_frequency) {
    const auto lower_priority = [this](const HeapEntry& x, const HeapEntry& y) {
      if (x.count != y.count) return x.count < y.count;
      const std::string& xa = tokens_[PairLeft(x.pair)];
      const std::string& ya = tokens_[PairLeft(y.pair)];
      if (xa != ya) return xa > ya;  // lexicographically smaller pair wins
      return tokens_[PairRight(x.pair)] > tokens_[PairRight(y.pair)];
    };
    std::priority_queue<HeapEntry, std::vector<HeapEntry>, decltype(lower_priority)> heap(lower_priority);
    for (const auto& [key, count] : pair_counts_) heap.push({count, key});

    std::unordered_map<uint64_t, int64_t> delta;
    std::vector<int32_t> merged;
    while (static_cast<int>(tokens_.size()) < vocab_size && !heap.empty()) {
      const HeapEntry top = heap.top();
      heap.pop();
      auto live = pair_counts_.find(top.pair);
      const int64_t live_count = live == pair_counts_.end() ? 0 : live->second;
      if (top.count != live_count) {
        if (top.count > live_count && live_count > 0) heap.push({live_count, top.pair});
        continue;
      }
      if (live_count < min_frequency) break;

      const int32_t a = PairLeft(top.pair), b = PairRight(top.pair);
      std::string new_token = tokens_[a] + tokens_[b];
      int32_t new_id;
      if (auto it = token_ids_.find(new_token); it != token_ids_.end()) {
        new_id = it->second;  // the same string reached by another merge: reuse its id, as HF does
      } else {
        new_id = static_cast<int32_t>(tokens_.size());
        tokens_.push_back(new_token);
        token_ids_.emplace(std::move(new_token), new_id);
      }
      merges_.emplace_back(a, b);

      std::vector<int32_t> affected = std::move(pair_words_[top.pair]);
      pair_words_.erase(top.pair);
      std::sort(affected.begin(), affected.end());
      affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
      delta.clear();
      for (int32_t w : affected) {
        Word& word = words_[w];
        const std::vector<int32_t>& s = word.symbols;
        merged.clear();
        bool changed = false;
        for (size_t i = 0; i < s.size();) {
          if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
            merged.push_back(new_id);
            i += 2;
            changed = true;
          } else {
            merged.push_back(s[i]);
            ++i;
          }
        }
        if (!changed) continue;  // stale entry: an earlier merge already consumed the pair here
        for (size_t i = 0; i + 1 < s.size(); ++i) delta[PairKey(s[i], s[i + 1])] -= word.count;
        for (size_t i = 0; i + 1 < merged.size(); ++i) {
          const uint64_t key = PairKey(merged[i], merged[i + 1]);
          delta[key] += word.count;
          if (merged[i] == new_id || merged[i + 1] == new_id) pair_words_[key].push_back(w);
        }
        word.symbols.swap(merged);
      }
      for (const auto& [key, d] : delta) {
        if (d == 0) continue;
        int64_t& count = pair_counts_[key];
        count += d;
        if (d > 0) heap.push({count, key});
        if (count == 0) pair_counts_.erase(key);
      }
    }
  }

 private:
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count;
  };
  struct HeapEntry {
    int64_t count;
    uint64_t pair;
  };
  static int32_t PairLeft(uint64_t key) { return static_cast<int32_t>(key >> 32); }
  static int32_t PairRight(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

  std::vector<std::string>& tokens_;
  std::vector<std::pair<int32_t, int32_t>>& merges_;
  std::unordered_map<std::string, int32_t> token_ids_;
  std::vector<Word> words_;
  std::unordered_map<uint64_t, int64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words_;
};

}  // namespace

absl::StatusOr<ByteLevelBPETokenizer> ByteLevelBPETokenizer::Train(const std::vector<std::string>& documents,
                                                                   const BpeTrainerOptions& options) {
  const ByteAlphabet& alphabet = Alphabet();
  auto impl = std::make_shared<Impl>();
  AddedTokenMatcher specials;
  for (const std::string& t : options.special_tokens) {
    if (t.empty() || !IsValidUtf8(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat("BpeTrainerOptions.special_tokens: '", t, "' must be non-empty valid UTF-8"));
    }
    const bool is_byte_token = std::find(alphabet.byte_to_char.begin(), alphabet.byte_to_char.end(), t) !=
                               alphabet.byte_to_char.end();
    if (is_byte_token || std::find(impl->vocab.begin(), impl->vocab.end(), t) != impl->vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat("BpeTrainerOptions.special_tokens: '", t,
                                                     "' is repeated or collides with a byte token"));
    }
    const auto id = static_cast<int32_t>(impl->vocab.size());
    impl->vocab.push_back(t);
    impl->added_tokens.push_back({t, id, /*special=*/true, /*normalized=*/false});
    specials.Add(t, id);
  }
  const int minimum = static_cast<int>(options.special_tokens.size()) + 256;
  if (options.vocab_size < minimum) {
    return absl::InvalidArgumentError(absl::StrCat("BpeTrainerOptions.vocab_size: ", options.vocab_size,
                                                   " is below the ", options.special_tokens.size(),
                                                   " special tokens + 256 byte tokens"));
  }
  std::array<int32_t, 256> byte_id{};
  for (int i = 0; i < 256; ++i) {
    byte_id[alphabet.id_order[i]] = static_cast<int32_t>(impl->vocab.size());
    impl->vocab.push_back(alphabet.byte_to_char[alphabet.id_order[i]]);
  }

  // Count pre-tokenized words; special tokens are cut out first so they never join a merge.
  std::unordered_map<std::string, int64_t> word_counts;
  for (const std::string& doc : documents) {
    specials.Split(
        doc,
        [&](std::string_view piece) {
          PreTokenize(piece, [&](std::string_view word) { ++word_counts[std::string(word)]; });
        },
        [](int32_t) {});
  }
  // Sorted so that word ids, and with them every container's iteration order, do not depend on hashing.
  std::vector<std::pair<std::string, int64_t>> sorted_words(word_counts.begin(), word_counts.end());
  word_counts.clear();
  std::sort(sorted_words.begin(), sorted_words.end());

  BpeTrainer trainer(&impl->vocab, &impl->merges);
  for (const auto& [word, count] : sorted_words) {
    std::vector<int32_t> symbols;
    symbols.reserve(word.size());
    for (char c : word) symbols.push_back(byte_id[static_cast<uint8_t>(c)]);
    trainer.AddWord(std::move(symbols), count);
  }
  sorted_words.clear();
  trainer.Run(options.vocab_size, std::max<int64_t>(1, options.min_frequency));

  impl->in_model_vocab.assign(impl->vocab.size(), true);
  impl->pre_tokenizer = DefaultByteLevelSection(false);
  impl->post_processor = DefaultByteLevelSection(true);
  impl->decoder = DefaultByteLevelSection(true);
  absl::Status status = impl->Finalize("trained tokenizer");
  if (!status.ok()) return status;
  ByteLevelBPETokenizer tokenizer;
  tokenizer.impl_ = std::move(impl);
  return tokenizer;
}

// -----------------------------------------------------------------------------------------------------------------
// tokenizer.json reading and writing.

namespace {

// Field checks with errors of the form "<file>: field '<name>': <what is wrong>".
class FieldChecker {
 public:
  explicit FieldChecker(std::string path) : path_(std::move(path)) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": field '", field, "': ", what));
  }

  // Null or absent.
  absl::Status ExpectNull(const Json& parent, const char* key, absl::string_view field, absl::string_view why) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return absl::OkStatus();
    return Error(field, absl::StrCat("must be null (", why, "), got ", Describe(*it)));
  }

  // Absent or of the given value.
  absl::Status ExpectBoolIfPresent(const Json& parent, const char* key, absl::string_view field, bool wanted,
                                   absl::string_view why) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_boolean() || it->get<bool>() != wanted) {
      return Error(field, absl::StrCat("must be ", wanted ? "true" : "false", " (", why, "), got ", Describe(*it)));
    }
    return absl::OkStatus();
  }

  enum class IfNull { kReject, kAccept };

  // A ByteLevel section (pre_tokenizer, decoder, post_processor).
  absl::Status ExpectByteLevel(const Json& parent, const char* key, IfNull if_null) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) {
      if (if_null == IfNull::kAccept) return absl::OkStatus();
      return Error(key, "missing; only ByteLevel is supported");
    }
    if (!it->is_object() || !it->contains("type") || (*it)["type"] != "ByteLevel") {
      return Error(absl::StrCat(key, ".type"),
                   absl::StrCat("only ByteLevel is supported, got ", Describe(*it)));
    }
    return absl::OkStatus();
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return buffer.str();
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string error = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::DataLossError(absl::StrCat(tmp, ": write failed: ", error));
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string error = std::strerror(errno);
    ::unlink(tmp.c_str());
    return absl::DataLossError(absl::StrCat(tmp, ": fsync/close failed: ", error));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string error = std::strerror(errno);
    ::unlink(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": rename from ", tmp, " failed: ", error));
  }
  // Make the rename itself durable.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

// The largest id accepted from a file; keeps a corrupt id from allocating gigabytes.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

}  // namespace

absl::StatusOr<ByteLevelBPETokenizer> ByteLevelBPETokenizer::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  Json root;
  try {
    root = Json::parse(*text);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON: ", e.what()));
  }
  const FieldChecker check(path);
  if (!root.is_object()) return check.Error("<root>", "expected a JSON object");

  absl::Status s;
  const auto fail = [&](absl::Status status) { s = std::move(status); return !s.ok(); };
  if (fail(check.ExpectNull(root, "normalizer", "normalizer", "normalizers are not supported")) ||
      fail(check.ExpectNull(root, "truncation", "truncation", "truncation is not supported")) ||
      fail(check.ExpectNull(root, "padding", "padding", "padding is not supported")) ||
      fail(check.ExpectByteLevel(root, "pre_tokenizer", FieldChecker::IfNull::kReject)) ||
      fail(check.ExpectByteLevel(root, "decoder", FieldChecker::IfNull::kReject)) ||
      fail(check.ExpectByteLevel(root, "post_processor", FieldChecker::IfNull::kAccept))) {
    return s;
  }
  const Json& pre = root["pre_tokenizer"];
  if (!pre.contains("add_prefix_space") || pre["add_prefix_space"] != false) {
    return check.Error("pre_tokenizer.add_prefix_space",
                       absl::StrCat("must be false (prefix spaces are not supported), got ",
                                    pre.contains("add_prefix_space") ? Describe(pre["add_prefix_space"]) : "none"));
  }
  if (fail(check.ExpectBoolIfPresent(pre, "use_regex", "pre_tokenizer.use_regex", true,
                                     "only the GPT-2 split regex is supported"))) {
    return s;
  }

  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) return check.Error("model", "missing or not an object");
  const Json& model = *model_it;
  if (model.contains("type") && model["type"] != "BPE") {
    return check.Error("model.type", absl::StrCat("only BPE is supported, got ", Describe(model["type"])));
  }
  if (fail(check.ExpectNull(model, "dropout", "model.dropout", "BPE dropout is not supported")) ||
      fail(check.ExpectNull(model, "unk_token", "model.unk_token", "byte-level BPE needs no unk token")) ||
      fail(check.ExpectBoolIfPresent(model, "byte_fallback", "model.byte_fallback", false,
                                     "byte fallback is not supported"))) {
    return s;
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && *it != "") {
      return check.Error(absl::StrCat("model.", key), absl::StrCat("must be null, got ", Describe(*it)));
    }
  }

  auto impl = std::make_shared<Impl>();
  if (auto it = model.find("ignore_merges"); it != model.end() && !it->is_null()) {
    if (!it->is_boolean()) return check.Error("model.ignore_merges", "expected a boolean");
    impl->ignore_merges = it->get<bool>();
  }

  // model.vocab
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return check.Error("model.vocab", "missing or not an object of token -> id");
  }
  for (const auto& [token, id_json] : vocab_it->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 || id_json.get<int64_t>() > kMaxTokenId) {
      return check.Error(absl::StrCat("model.vocab[\"", token, "\"]"),
                         absl::StrCat("expected an id in [0, ", kMaxTokenId, "], got ", Describe(id_json)));
    }
    const auto id = static_cast<size_t>(id_json.get<int64_t>());
    if (id >= impl->vocab.size()) {
      impl->vocab.resize(id + 1);
      impl->in_model_vocab.resize(id + 1, false);
    }
    if (impl->in_model_vocab[id]) {
      return check.Error(absl::StrCat("model.vocab[\"", token, "\"]"),
                         absl::StrCat("id ", id, " is also used by '", impl->vocab[id], "'"));
    }
    impl->vocab[id] = token;
    impl->in_model_vocab[id] = true;
  }
  std::unordered_map<std::string, int32_t> model_ids;
  for (size_t id = 0; id < impl->vocab.size(); ++id) {
    if (impl->in_model_vocab[id]) model_ids.emplace(impl->vocab[id], static_cast<int32_t>(id));
  }

  // model.merges: "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20).
  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) return check.Error("model.merges", "missing or not a list");
  impl->merges.reserve(merges_it->size());
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const Json& m = (*merges_it)[i];
    const std::string field = absl::StrCat("model.merges[", i, "]");
    std::string a, b;
    if (m.is_string()) {
      const std::string& line = m.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
          line.find(' ', space + 1) != std::string::npos) {
        return check.Error(field, absl::StrCat("expected \"left right\", got ", Describe(m)));
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return check.Error(field, absl::StrCat("expected \"left right\" or [\"left\", \"right\"], got ", Describe(m)));
    }
    auto ia = model_ids.find(a), ib = model_ids.find(b);
    if (ia == model_ids.end() || ib == model_ids.end()) {
      return check.Error(field, absl::StrCat("token '", ia == model_ids.end() ? a : b, "' is not in model.vocab"));
    }
    impl->merges.emplace_back(ia->second, ib->second);
  }

  // added_tokens
  if (auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    if (!it->is_array()) return check.Error("added_tokens", "expected a list");
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& t = (*it)[i];
      const std::string field = absl::StrCat("added_tokens[", i, "]");
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
          !t["content"].is_string() || t["content"].get_ref<const std::string&>().empty()) {
        return check.Error(field, "expected an object with an integer id and a non-empty string content");
      }
      const int64_t id = t["id"].get<int64_t>();
      if (id < 0 || id > kMaxTokenId) {
        return check.Error(field + ".id", absl::StrCat("expected an id in [0, ", kMaxTokenId, "], got ", id));
      }
      AddedTokenInfo info{t["content"].get<std::string>(), static_cast<int32_t>(id), false, false};
      for (const char* flag : {"single_word", "lstrip", "rstrip"}) {
        if (fail(check.ExpectBoolIfPresent(t, flag, absl::StrCat(field, ".", flag), false,
                                           "only verbatim added tokens are supported"))) {
          return s;
        }
      }
      if (t.contains("special")) {
        if (!t["special"].is_boolean()) return check.Error(field + ".special", "expected a boolean");
        info.special = t["special"].get<bool>();
      }
      info.normalized = !info.special;  // HF's default
      if (t.contains("normalized")) {
        if (!t["normalized"].is_boolean()) return check.Error(field + ".normalized", "expected a boolean");
        info.normalized = t["normalized"].get<bool>();
      }
      if (auto m = model_ids.find(info.content); m != model_ids.end() && m->second != info.id) {
        return check.Error(field, absl::StrCat("'", info.content, "' has id ", info.id, " but model.vocab says ",
                                               m->second));
      }
      if (static_cast<size_t>(id) >= impl->vocab.size()) {
        impl->vocab.resize(id + 1);
        impl->in_model_vocab.resize(id + 1, false);
      }
      if (impl->in_model_vocab[id] ? impl->vocab[id] != info.content : !impl->vocab[id].empty()) {
        return check.Error(field, absl::StrCat("id ", id, " is already taken by '", impl->vocab[id], "'"));
      }
      impl->vocab[id] = info.content;
      impl->added_tokens.push_back(std::move(info));
    }
  }

  impl->pre_tokenizer = root["pre_tokenizer"];
  impl->decoder = root["decoder"];
  impl->post_processor = root.contains("post_processor") ? root["post_processor"] : Json();
  absl::Status status = impl->Finalize(path);
  if (!status.ok()) return status;
  ByteLevelBPETokenizer tokenizer;
  tokenizer.impl_ = std::move(impl);
  return tokenizer;
}

absl::Status ByteLevelBPETokenizer::Save(const std::string& path) const {
  const Impl& impl = *impl_;
  Json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  Json added = Json::array();
  for (const AddedTokenInfo& t : impl.added_tokens) {
    Json entry;
    entry["id"] = t.id;
    entry["content"] = t.content;
    entry["single_word"] = false;
    entry["lstrip"] = false;
    entry["rstrip"] = false;
    entry["normalized"] = t.normalized;
    entry["special"] = t.special;
    added.push_back(std::move(entry));
  }
  root["added_tokens"] = std::move(added);
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = impl.pre_tokenizer;
  root["post_processor"] = impl.post_processor;
  root["decoder"] = impl.decoder;
  Json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = impl.ignore_merges;
  Json vocab = Json::object();
  for (size_t id = 0; id < impl.vocab.size(); ++id) {
    if (impl.in_model_vocab[id]) vocab[impl.vocab[id]] = id;
  }
  model["vocab"] = std::move(vocab);
  Json merges = Json::array();
  for (const auto& [a, b] : impl.merges) merges.push_back(Json::array({impl.vocab[a], impl.vocab[b]}));
  model["merges"] = std::move(merges);
  root["model"] = std::move(model);

  std::string text;
  try {
    text = root.dump(2);
  } catch (const Json::type_error& e) {  // invalid UTF-8 in a token; Train and Load both rule it out
    return absl::InternalError(absl::StrCat(path, ": cannot serialize: ", e.what()));
  }
  text.push_back('\n');
  return WriteFileAtomically(path, text);
}

}  // namespace megatron::tokenizers
