#include "megatron/core/utils/file_io.h"

#include <dirent.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"

namespace megatron::utils {
namespace {

std::string TestDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp ? tmp : "/tmp", "/file_io_test_", name, "_", ::getpid());
  EXPECT_TRUE(MakeDirectories(dir).ok());
  return dir;
}

int CountEntries(const std::string& dir) {
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) {
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
  }
  ::closedir(d);
  return n;
}

TEST(FileIo, WriteReadRoundTripWithBinaryData) {
  const std::string dir = TestDir("rt");
  const std::string path = dir + "/a.bin";
  std::string data;
  for (int i = 0; i < 200000; ++i) data.push_back(static_cast<char>(i * 7));  // > one read buffer, has NULs
  ASSERT_TRUE(WriteFileAtomically(path, data).ok());
  absl::StatusOr<std::string> got = ReadFile(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, data);
  // Overwrite with shorter contents; no temporary file left behind.
  ASSERT_TRUE(WriteFileAtomically(path, "short").ok());
  EXPECT_EQ(*ReadFile(path), "short");
  EXPECT_EQ(CountEntries(dir), 1);
  ASSERT_TRUE(WriteFileAtomically(path, "").ok());
  EXPECT_EQ(*ReadFile(path), "");
}

TEST(FileIo, WritePieces) {
  const std::string dir = TestDir("pieces");
  const std::string path = dir + "/p.bin";
  const std::string big(100000, 'z');
  ASSERT_TRUE(WriteFileAtomically(path, std::vector<std::string_view>{"ab", "", big, "c"}).ok());
  EXPECT_EQ(*ReadFile(path), "ab" + big + "c");
  ASSERT_TRUE(WriteFileAtomically(path, std::vector<std::string_view>{}).ok());
  EXPECT_EQ(*ReadFile(path), "");
  EXPECT_EQ(CountEntries(dir), 1);
}

TEST(FileIo, ReadMissingFileNamesPath) {
  absl::StatusOr<std::string> got = ReadFile("/nonexistent_dir_xyz/file.txt");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "/nonexistent_dir_xyz/file.txt")) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), "No such file")) << got.status();
}

TEST(FileIo, ReadDirectoryFails) {
  const std::string dir = TestDir("readdir");
  absl::StatusOr<std::string> got = ReadFile(dir);
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(absl::StrContains(got.status().message(), dir)) << got.status();
}

TEST(FileIo, WriteIntoMissingDirectoryFailsAndNamesPath) {
  const absl::Status s = WriteFileAtomically("/nonexistent_dir_xyz/out.txt", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "/nonexistent_dir_xyz/out.txt")) << s;
}

TEST(FileIo, MakeDirectoriesRecursive) {
  const std::string dir = TestDir("mkdir");
  const std::string deep = dir + "/a/b/c/";
  ASSERT_TRUE(MakeDirectories(deep).ok());
  EXPECT_TRUE(IsDirectory(dir + "/a/b/c"));
  EXPECT_TRUE(MakeDirectories(deep).ok());  // idempotent
  ASSERT_TRUE(MakeParentDirectories(dir + "/x/y/file.txt").ok());
  EXPECT_TRUE(IsDirectory(dir + "/x/y"));
  EXPECT_FALSE(PathExists(dir + "/x/y/file.txt"));
  // A file in the way.
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "x").ok());
  const absl::Status s = MakeDirectories(dir + "/f/g");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), dir + "/f")) << s;
}

TEST(FileIo, RenameAndFsync) {
  const std::string dir = TestDir("rename");
  ASSERT_TRUE(WriteFileAtomically(dir + "/from", "payload").ok());
  ASSERT_TRUE(RenameAtomically(dir + "/from", dir + "/to").ok());
  EXPECT_FALSE(PathExists(dir + "/from"));
  EXPECT_EQ(*ReadFile(dir + "/to"), "payload");
  EXPECT_TRUE(FsyncDirectory(dir).ok());
  const absl::Status s = RenameAtomically(dir + "/missing", dir + "/to2");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), dir + "/missing")) << s;
  EXPECT_FALSE(FsyncDirectory(dir + "/nope").ok());
}

TEST(FileIo, DirName) {
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("a/b/"), "a");
  EXPECT_EQ(DirName("file"), ".");
  EXPECT_EQ(DirName("/file"), "/");
  EXPECT_EQ(DirName("/"), "/");
  EXPECT_EQ(DirName("a//b"), "a");
  EXPECT_EQ(DirName(""), ".");
}

}  // namespace
}  // namespace megatron::utils
