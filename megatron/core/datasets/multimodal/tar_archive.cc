#include "megatron/core/datasets/multimodal/tar_archive.h"

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::datasets::multimodal {
namespace {

constexpr size_t kBlock = 512;
constexpr size_t kRecord = 20 * kBlock;  // tarfile.RECORDSIZE (and GNU tar's default blocking factor)

// Header field offsets and widths (POSIX.1-1988 ustar).
struct Field {
  size_t offset, size;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12}, kMtime{136, 12},
    kChksum{148, 8}, kType{156, 1}, kMagic{257, 6}, kVersion{263, 2}, kPrefix{345, 155};

// tarfile.itn for ustar: zero-padded octal of width size-1, then NUL.
void PutOctal(char* header, Field f, uint64_t value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%0*llo", static_cast<int>(f.size - 1), static_cast<unsigned long long>(value));
  std::memcpy(header + f.offset, buf, f.size - 1);
  header[f.offset + f.size - 1] = '\0';
}

uint64_t HeaderChecksum(const char* header) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    const bool in_chksum = i >= kChksum.offset && i < kChksum.offset + kChksum.size;
    sum += in_chksum ? ' ' : static_cast<unsigned char>(header[i]);
  }
  return sum;
}

std::string FieldString(const char* header, Field f) {
  const char* p = header + f.offset;
  return std::string(p, strnlen(p, f.size));
}

// Octal numeric field (NUL/space terminated, leading spaces allowed). Base-256 (GNU, for > 8 GiB) is rejected.
bool ParseOctal(const char* header, Field f, uint64_t* out) {
  const char* p = header + f.offset;
  size_t i = 0;
  while (i < f.size && p[i] == ' ') ++i;
  uint64_t v = 0;
  size_t digits = 0;
  for (; i < f.size && p[i] >= '0' && p[i] <= '7'; ++i, ++digits) v = v * 8 + (p[i] - '0');
  for (; i < f.size; ++i) {
    if (p[i] != '\0' && p[i] != ' ') return false;
  }
  *out = v;
  return digits > 0;
}

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// pax extended header records: "<len> <key>=<value>\n"; returns the value of "path" if present.
std::string PaxPath(const std::string& records) {
  size_t pos = 0;
  std::string path;
  while (pos < records.size()) {
    const size_t space = records.find(' ', pos);
    if (space == std::string::npos) break;
    const size_t len = std::strtoull(records.substr(pos, space - pos).c_str(), nullptr, 10);
    if (len == 0 || pos + len > records.size() || space + 1 >= pos + len) break;  // malformed: stop
    const std::string record = records.substr(space + 1, pos + len - space - 2);  // without the trailing '\n'
    if (record.rfind("path=", 0) == 0) path = record.substr(5);
    pos += len;
  }
  return path;
}

}  // namespace

absl::StatusOr<std::string> SerializeTar(const std::vector<TarMember>& members) {
  std::string out;
  for (const TarMember& m : members) {
    if (m.name.empty() || m.name.size() > kName.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("tar member name '", m.name, "' must be 1 to 100 bytes (ustar without prefix)"));
    }
    char header[kBlock] = {};
    std::memcpy(header + kName.offset, m.name.data(), m.name.size());
    PutOctal(header, kMode, 0644);
    PutOctal(header, kUid, 0);
    PutOctal(header, kGid, 0);
    PutOctal(header, kSize, m.data.size());
    PutOctal(header, kMtime, 0);
    header[kType.offset] = '0';
    std::memcpy(header + kMagic.offset, "ustar\0", 6);
    std::memcpy(header + kVersion.offset, "00", 2);
    // tarfile writes the checksum as "%06o\0" followed by the space that was there while summing.
    char chksum[8];
    std::snprintf(chksum, sizeof(chksum), "%06o", static_cast<unsigned>(HeaderChecksum(header)));
    std::memcpy(header + kChksum.offset, chksum, 6);
    header[kChksum.offset + 6] = '\0';
    header[kChksum.offset + 7] = ' ';
    out.append(header, kBlock);
    out.append(m.data);
    out.append((kBlock - m.data.size() % kBlock) % kBlock, '\0');
  }
  out.append(2 * kBlock, '\0');
  out.append((kRecord - out.size() % kRecord) % kRecord, '\0');
  return out;
}

absl::Status WriteTar(const std::string& path, const std::vector<TarMember>& members) {
  absl::StatusOr<std::string> bytes = SerializeTar(members);
  if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes.status().message()));
  return utils::WriteFileAtomically(path, *bytes);
}

absl::StatusOr<std::vector<TarMember>> ParseTar(const std::string& bytes, const std::string& name) {
  std::vector<TarMember> members;
  std::string pax_path;
  size_t offset = 0;
  auto where = [&]() {
    return members.empty() ? std::string("the first member")
                           : absl::StrCat("the member after '", members.back().name, "'");
  };
  while (true) {
    if (offset + kBlock > bytes.size()) {
      // A tar ends with zero blocks; running out of bytes before them means the file was cut short.
      return absl::InvalidArgumentError(absl::StrCat(name, ": truncated archive: header of ", where(),
                                                     " at offset ", offset, " is past the end (", bytes.size(),
                                                     " bytes)"));
    }
    const char* header = bytes.data() + offset;
    if (AllZero(header, kBlock)) break;  // end of archive
    uint64_t stored = 0;
    const std::string magic = FieldString(header, kMagic);
    if (magic.rfind("ustar", 0) != 0 || !ParseOctal(header, kChksum, &stored) || stored != HeaderChecksum(header)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt tar header for ", where(), " at offset ",
                                                     offset, " (bad magic or checksum)"));
    }
    std::string member_name = FieldString(header, kName);
    const std::string prefix = FieldString(header, kPrefix);
    if (magic == "ustar" && !prefix.empty()) member_name = absl::StrCat(prefix, "/", member_name);
    uint64_t size = 0;
    if (!ParseOctal(header, kSize, &size)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": member '", member_name, "' at offset ", offset, " has an unreadable size field"));
    }
    const char type = header[kType.offset];
    const size_t data_offset = offset + kBlock;
    if (size > bytes.size() || data_offset + size > bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": member '", member_name, "' is truncated: needs ", size,
                                                     " bytes at offset ", data_offset, ", file has ", bytes.size()));
    }
    std::string data = bytes.substr(data_offset, size);
    offset = data_offset + (size + kBlock - 1) / kBlock * kBlock;
    if (type == 'x') {  // pax header for the next member
      pax_path = PaxPath(data);
      continue;
    }
    if (type == '0' || type == '\0' || type == '7') {
      if (!pax_path.empty()) member_name = pax_path;
      members.push_back({std::move(member_name), std::move(data)});
    }
    pax_path.clear();  // directories, links, 'g' global headers: skipped
  }
  return members;
}

absl::StatusOr<std::vector<TarMember>> ReadTar(const std::string& path) {
  absl::StatusOr<std::string> bytes = utils::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return ParseTar(*bytes, path);
}

}  // namespace megatron::datasets::multimodal
