//===- TokenLoaderTest.cpp - the one token loader: formats and errors -----===//
//
// sq::loadTokens serves sq-run (--tokens, --ppl), the SpinQuant calibration
// (data=) and GPTQ (calib=): its formats and every message it gives.
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/TokenLoader.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace sq;

namespace {

/// A temporary file holding `bytes`, removed at the end of the test.
class TempFile {
public:
  TempFile(llvm::StringRef suffix, llvm::StringRef bytes) {
    int fd;
    EXPECT_FALSE(
        llvm::sys::fs::createTemporaryFile("sq-tokens", suffix, fd, path));
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << bytes;
  }
  ~TempFile() { llvm::sys::fs::remove(path); }
  std::string str() const { return std::string(path); }

private:
  llvm::SmallString<128> path;
};

std::string int32s(const std::vector<int32_t> &ids) {
  return std::string(reinterpret_cast<const char *>(ids.data()),
                     ids.size() * sizeof(int32_t));
}

TEST(TokenLoader, ReadsInt32IdsByExtensionOrFormat) {
  TempFile bin(".bin", int32s({3, 1, 4, 1, 5}));
  TokenSource source;
  source.path = bin.str();
  std::vector<int64_t> ids;
  std::string error;
  ASSERT_TRUE(loadTokens(source, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int64_t>{3, 1, 4, 1, 5}));

  TempFile other(".ids", int32s({7, 8}));
  source.path = other.str();
  source.format = TokenSource::Format::Ids;
  ASSERT_TRUE(loadTokens(source, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int64_t>{7, 8}));
}

TEST(TokenLoader, TokenizesTextWithAGivenTokenizerOrSpec) {
  TempFile text(".txt", "Hi!");
  std::vector<int64_t> ids;
  std::string error;
  TokenSource source;
  source.path = text.str();
  source.tokenizerSpec = "byte";
  ASSERT_TRUE(loadTokens(source, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int64_t>{'H', 'i', '!'}));

  std::unique_ptr<Tokenizer> byte = Tokenizer::create("byte", error);
  ASSERT_TRUE(byte);
  TokenSource given;
  given.path = text.str();
  given.format = TokenSource::Format::Text;
  given.tokenizer = byte.get();
  ASSERT_TRUE(loadTokens(given, ids, error)) << error;
  EXPECT_EQ(ids.size(), 3u);

  // A .bin read as text (Format::Text) is bytes, not ids.
  TempFile bin(".bin", int32s({1}));
  given.path = bin.str();
  ASSERT_TRUE(loadTokens(given, ids, error)) << error;
  EXPECT_EQ(ids.size(), 4u);
}

TEST(TokenLoader, EmbeddedTextWithTheDefaultTokenizer) {
  TokenSource source;
  source.text = "abc";
  source.defaultTokenizerSpec = "byte";
  std::vector<int64_t> ids;
  std::string error;
  ASSERT_TRUE(loadTokens(source, ids, error)) << error;
  EXPECT_EQ(ids, (std::vector<int64_t>{'a', 'b', 'c'}));
}

TEST(TokenLoader, Errors) {
  std::vector<int64_t> ids;
  std::string error;
  TokenSource missing;
  missing.path = "/nonexistent/sq-tokens.bin";
  EXPECT_FALSE(loadTokens(missing, ids, error));
  EXPECT_EQ(
      error,
      "cannot read /nonexistent/sq-tokens.bin: No such file or directory");
  missing.name = "calibration data 'x'";
  EXPECT_FALSE(loadTokens(missing, ids, error));
  EXPECT_EQ(error, "cannot read calibration data 'x': No such file or "
                   "directory");

  TokenSource device;
  device.path = "/dev/zero";
  EXPECT_FALSE(loadTokens(device, ids, error));
  EXPECT_EQ(error, "/dev/zero: not a regular file");

  TempFile odd(".bin", "1234567");
  TokenSource oddSource;
  oddSource.path = odd.str();
  EXPECT_FALSE(loadTokens(oddSource, ids, error));
  EXPECT_EQ(error, odd.str() +
                       ": size 7 is not a multiple of 4 (expected int32 "
                       "token ids)");

  TempFile text(".txt", "text");
  TokenSource noTokenizer;
  noTokenizer.path = text.str();
  noTokenizer.name = "T";
  EXPECT_FALSE(loadTokens(noTokenizer, ids, error));
  EXPECT_EQ(error, "T: text needs a tokenizer");
  noTokenizer.needsTokenizer = "give tokenizer=";
  EXPECT_FALSE(loadTokens(noTokenizer, ids, error));
  EXPECT_EQ(error, "give tokenizer=");
  noTokenizer.tokenizerSpec = "bytes";
  EXPECT_FALSE(loadTokens(noTokenizer, ids, error));
  EXPECT_EQ(error, "unknown tokenizer 'bytes': use 'byte', 'sp:PATH' (a "
                   "SentencePiece .model) or 'hf:DIR' (a Hugging Face "
                   "tokenizer.json)");

  TempFile big(".bin", int32s({1, 2, 40}));
  TokenSource vocab;
  vocab.path = big.str();
  vocab.name = "D";
  vocab.vocab = 32;
  EXPECT_FALSE(loadTokens(vocab, ids, error));
  EXPECT_EQ(error, "D: token 2 is 40, outside the model's vocabulary of 32");
  TokenSource negative = vocab;
  TempFile neg(".bin", int32s({-1}));
  negative.path = neg.str();
  EXPECT_FALSE(loadTokens(negative, ids, error));
  EXPECT_EQ(error, "D: token 0 is -1, outside the model's vocabulary of 32");
  TokenSource bytes;
  bytes.text = "A";
  bytes.name = "E";
  bytes.tokenizerSpec = "byte";
  bytes.vocab = 32;
  EXPECT_FALSE(loadTokens(bytes, ids, error));
  EXPECT_EQ(error, "E: token 0 is 65, outside the model's vocabulary of 32 "
                   "(tokenizer=byte)");
}

} // namespace
