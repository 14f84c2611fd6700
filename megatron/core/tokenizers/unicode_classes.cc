#include "megatron/core/tokenizers/unicode_classes.h"

#include <algorithm>
#include <array>
#include <iterator>

namespace megatron::tokenizers::internal {
namespace {

struct CodePointRange {
  char32_t lo;
  char32_t hi;
};

#include "megatron/core/tokenizers/unicode_tables.inc"

template <size_t N>
bool InRanges(const CodePointRange (&ranges)[N], char32_t cp) {
  // First range whose upper end is >= cp; the code point is inside it iff it is also >= that range's lower end.
  const CodePointRange* it =
      std::lower_bound(std::begin(ranges), std::end(ranges), cp,
                       [](const CodePointRange& r, char32_t value) { return r.hi < value; });
  return it != std::end(ranges) && it->lo <= cp;
}

CharClass ClassifySlow(char32_t cp) {
  if (InRanges(kLetterRanges, cp)) return CharClass::kLetter;
  if (InRanges(kNumberRanges, cp)) return CharClass::kNumber;
  if (InRanges(kWhiteSpaceRanges, cp)) return CharClass::kWhiteSpace;
  return CharClass::kOther;
}

// Latin-1 is most of what English text holds; a table lookup there keeps the binary searches off the hot path.
const std::array<CharClass, 256>& Latin1Classes() {
  static const std::array<CharClass, 256> table = [] {
    std::array<CharClass, 256> t{};
    for (char32_t cp = 0; cp < 256; ++cp) t[cp] = ClassifySlow(cp);
    return t;
  }();
  return table;
}

}  // namespace

CharClass ClassifyCodePoint(char32_t cp) {
  if (cp < 256) return Latin1Classes()[cp];
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return CharClass::kOther;
  return ClassifySlow(cp);
}

const char* UnicodeTablesVersion() { return kUnicodeTablesVersion; }

namespace {

// Shape of a UTF-8 sequence by its lead byte (Unicode table 3-7): how many continuation bytes follow and the
// allowed range of the first of them (the narrowed ranges exclude overlongs, surrogates and values past
// U+10FFFF). Returns false for a byte that cannot start a sequence.
bool SequenceShape(uint8_t lead, size_t* continuation, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    *continuation = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    *continuation = 2;
    if (lead == 0xE0) *lo = 0xA0;
    if (lead == 0xED) *hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    *continuation = 3;
    if (lead == 0xF0) *lo = 0x90;
    if (lead == 0xF4) *hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

// Number of bytes at text[pos...] that belong to the (possibly truncated) sequence started there: the lead byte
// plus the continuation bytes that are acceptable in their position.
size_t AcceptedPrefix(std::string_view text, size_t pos, size_t continuation, uint8_t lo, uint8_t hi) {
  size_t n = 1;
  for (size_t k = 1; k <= continuation && pos + k < text.size(); ++k) {
    const uint8_t b = static_cast<uint8_t>(text[pos + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    ++n;
  }
  return n;
}

}  // namespace

char32_t DecodeUtf8(std::string_view text, size_t pos, size_t* length) {
  const uint8_t lead = static_cast<uint8_t>(text[pos]);
  *length = 1;
  if (lead < 0x80) return lead;
  size_t continuation;
  uint8_t lo, hi;
  if (!SequenceShape(lead, &continuation, &lo, &hi)) return kInvalidCodePoint;
  if (AcceptedPrefix(text, pos, continuation, lo, hi) != continuation + 1) return kInvalidCodePoint;
  char32_t cp = lead & (0x7F >> (continuation + 1));
  for (size_t k = 1; k <= continuation; ++k) cp = (cp << 6) | (static_cast<uint8_t>(text[pos + k]) & 0x3F);
  *length = continuation + 1;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t length;
    if (DecodeUtf8(bytes, pos, &length) != kInvalidCodePoint) {
      out.append(bytes.substr(pos, length));
      pos += length;
      continue;
    }
    // Ill-formed: one U+FFFD stands for the maximal subpart, i.e. the lead byte plus the continuation bytes
    // that were still acceptable before the sequence broke off (or just the byte, if it cannot lead).
    size_t continuation;
    uint8_t lo, hi;
    const uint8_t lead = static_cast<uint8_t>(bytes[pos]);
    const size_t subpart =
        SequenceShape(lead, &continuation, &lo, &hi) ? AcceptedPrefix(bytes, pos, continuation, lo, hi) : 1;
    out.append("\xEF\xBF\xBD");  // U+FFFD
    pos += subpart;
  }
  return out;
}

}  // namespace megatron::tokenizers::internal
