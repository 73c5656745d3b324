//===- PackTest.cpp - exhaustive tests of int4 packing --------------------===//

#include "sq/Numerics/Pack.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

using namespace sq::numerics;

namespace {

TEST(Pack, PackedBytesRoundsUp) {
  EXPECT_EQ(packedBytes(0, 4), 0u);
  EXPECT_EQ(packedBytes(1, 4), 1u);
  EXPECT_EQ(packedBytes(2, 4), 1u);
  EXPECT_EQ(packedBytes(3, 4), 2u);
  EXPECT_EQ(packedBytes(11008, 4), 5504u);
  EXPECT_EQ(packedBytes(7, 8), 7u);
}

// Every byte value unpacks to two nibbles that pack back to the same byte.
TEST(Pack, EveryByteRoundTripsSigned) {
  for (int b = 0; b < 256; ++b) {
    uint8_t byte = static_cast<uint8_t>(b);
    int8_t values[2];
    unpackInt4(&byte, 2, values);
    int lo = b & 0xF, hi = b >> 4;
    EXPECT_EQ(values[0], lo >= 8 ? lo - 16 : lo) << "byte " << b;
    EXPECT_EQ(values[1], hi >= 8 ? hi - 16 : hi) << "byte " << b;
    uint8_t repacked = 0;
    ASSERT_TRUE(packInt4(values, 2, &repacked));
    EXPECT_EQ(repacked, byte) << "byte " << b;
  }
}

TEST(Pack, EveryByteRoundTripsUnsigned) {
  for (int b = 0; b < 256; ++b) {
    uint8_t byte = static_cast<uint8_t>(b);
    uint8_t values[2];
    unpackUInt4(&byte, 2, values);
    EXPECT_EQ(values[0], b & 0xF);
    EXPECT_EQ(values[1], b >> 4);
    uint8_t repacked = 0;
    ASSERT_TRUE(packUInt4(values, 2, &repacked));
    EXPECT_EQ(repacked, byte);
  }
}

// Every pair of signed values in [-8, 7] survives pack -> unpack, and the
// low nibble holds the first element.
TEST(Pack, EveryPairRoundTripsSigned) {
  for (int a = -8; a <= 7; ++a)
    for (int b = -8; b <= 7; ++b) {
      int8_t in[2] = {static_cast<int8_t>(a), static_cast<int8_t>(b)};
      uint8_t byte;
      ASSERT_TRUE(packInt4(in, 2, &byte));
      EXPECT_EQ(byte & 0xF, a & 0xF);
      EXPECT_EQ(byte >> 4, b & 0xF);
      int8_t out[2];
      unpackInt4(&byte, 2, out);
      EXPECT_EQ(out[0], a);
      EXPECT_EQ(out[1], b);
    }
}

// Odd lengths: the last byte's high nibble is zero and nothing past
// packedBytes() is written.
TEST(Pack, OddLengths) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> dist(-8, 7);
  for (size_t n : {1u, 3u, 5u, 17u, 63u, 127u, 1001u}) {
    std::vector<int8_t> in(n);
    for (int8_t &v : in)
      v = static_cast<int8_t>(dist(rng));
    std::vector<uint8_t> packed(packedBytes(n, 4) + 1, 0xAB);
    ASSERT_TRUE(packInt4(in.data(), n, packed.data()));
    EXPECT_EQ(packed[packedBytes(n, 4) - 1] >> 4, 0) << "n=" << n;
    EXPECT_EQ(packed.back(), 0xAB) << "wrote past the end, n=" << n;
    std::vector<int8_t> out(n);
    unpackInt4(packed.data(), n, out.data());
    EXPECT_EQ(out, in) << "n=" << n;
  }
}

TEST(Pack, OddLengthsUnsigned) {
  for (size_t n : {1u, 3u, 15u, 33u}) {
    std::vector<uint8_t> in(n);
    for (size_t i = 0; i < n; ++i)
      in[i] = static_cast<uint8_t>((i * 7 + 3) % 16);
    std::vector<uint8_t> packed(packedBytes(n, 4) + 1, 0xCD);
    ASSERT_TRUE(packUInt4(in.data(), n, packed.data()));
    EXPECT_EQ(packed[packedBytes(n, 4) - 1] >> 4, 0);
    EXPECT_EQ(packed.back(), 0xCD);
    std::vector<uint8_t> out(n);
    unpackUInt4(packed.data(), n, out.data());
    EXPECT_EQ(out, in);
  }
}

TEST(Pack, RejectsOutOfRangeWithoutWriting) {
  for (int bad : {-9, 8, 100, -128, 127}) {
    int8_t in[3] = {1, static_cast<int8_t>(bad), 2};
    uint8_t out[2] = {0x5A, 0x5A};
    EXPECT_FALSE(packInt4(in, 3, out)) << bad;
    EXPECT_EQ(out[0], 0x5A);
    EXPECT_EQ(out[1], 0x5A);
  }
  uint8_t in[2] = {3, 16};
  uint8_t out = 0x5A;
  EXPECT_FALSE(packUInt4(in, 2, &out));
  EXPECT_EQ(out, 0x5A);
}

// Rows are padded independently: with an odd column count each row starts
// on a fresh byte.
TEST(Pack, RowsArePaddedIndependently) {
  const size_t rows = 3, cols = 5;
  std::vector<int8_t> in(rows * cols);
  for (size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<int8_t>(static_cast<int>(i % 16) - 8);
  std::vector<uint8_t> packed(rows * packedBytes(cols, 4));
  ASSERT_EQ(packed.size(), 9u);
  ASSERT_TRUE(packInt4Rows(in.data(), rows, cols, packed.data()));
  for (size_t r = 0; r < rows; ++r) {
    uint8_t expected[3];
    ASSERT_TRUE(packInt4(in.data() + r * cols, cols, expected));
    for (size_t j = 0; j < 3; ++j)
      EXPECT_EQ(packed[r * 3 + j], expected[j]) << "row " << r;
  }
  std::vector<int8_t> out(rows * cols);
  unpackInt4Rows(packed.data(), rows, cols, out.data());
  EXPECT_EQ(out, in);

  in[7] = 9;
  std::vector<uint8_t> untouched(packed.size(), 0x11);
  EXPECT_FALSE(packInt4Rows(in.data(), rows, cols, untouched.data()));
  EXPECT_EQ(untouched, std::vector<uint8_t>(packed.size(), 0x11));
}

// A LLaMA-2-7B down_proj row (11008 values) packs into 5504 bytes.
TEST(Pack, LargeRow) {
  const size_t n = 11008;
  std::vector<int8_t> in(n);
  for (size_t i = 0; i < n; ++i)
    in[i] = static_cast<int8_t>(
        static_cast<int>(static_cast<uint32_t>(i * 2654435761u) >> 28) - 8);
  std::vector<uint8_t> packed(packedBytes(n, 4));
  ASSERT_TRUE(packInt4(in.data(), n, packed.data()));
  std::vector<int8_t> out(n);
  unpackInt4(packed.data(), n, out.data());
  EXPECT_EQ(out, in);
}

} // namespace

#include "sq/Numerics/Float16.h"

namespace {

// Every fp16 and bf16 bit pattern converts exactly (checked against the
// compiler's own _Float16 / bit shift for bf16).
TEST(Float16, EveryHalfConvertsExactly) {
  for (uint32_t b = 0; b < 65536; ++b) {
    uint16_t bits = static_cast<uint16_t>(b);
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    float want = static_cast<float>(h), got = sq::numerics::halfToFloat(bits);
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(got)) << b;
    else
      EXPECT_EQ(std::memcmp(&want, &got, 4), 0) << b;
  }
}

TEST(Float16, WidenToFloatMatchesElementwise) {
  std::vector<uint16_t> bits = {0x3C00, 0xC000, 0x7C00, 0x0001, 0x3F80};
  std::vector<float> out(bits.size());
  sq::numerics::widenToFloat(bits.data(), bits.size(),
                             sq::numerics::FloatFormat::F16, out.data());
  for (size_t i = 0; i < bits.size(); ++i)
    EXPECT_EQ(out[i], sq::numerics::halfToFloat(bits[i]));
  sq::numerics::widenToFloat(bits.data(), bits.size(),
                             sq::numerics::FloatFormat::BF16, out.data());
  for (size_t i = 0; i < bits.size(); ++i)
    EXPECT_EQ(out[i], sq::numerics::bf16ToFloat(bits[i]));
  std::vector<float> f = {1.5f, -2.0f}, g(2);
  sq::numerics::widenToFloat(f.data(), 2, sq::numerics::FloatFormat::F32,
                             g.data());
  EXPECT_EQ(g, f);
}

// countNonFinite agrees with std::isfinite of the widened value for every
// half and bf16 pattern, and finds the first bad fp32 value.
TEST(Float16, CountNonFiniteMatchesIsFinite) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<uint16_t>(i);
  for (auto format :
       {sq::numerics::FloatFormat::F16, sq::numerics::FloatFormat::BF16}) {
    std::vector<float> wide(all.size());
    sq::numerics::widenToFloat(all.data(), all.size(), format, wide.data());
    int64_t want = 0, wantFirst = -1;
    for (size_t i = 0; i < wide.size(); ++i)
      if (!std::isfinite(wide[i])) {
        if (wantFirst < 0)
          wantFirst = i;
        ++want;
      }
    int64_t first;
    EXPECT_EQ(
        sq::numerics::countNonFinite(all.data(), all.size(), format, &first),
        want);
    EXPECT_EQ(first, wantFirst);
  }
  std::vector<float> f = {1.0f, -0.0f, 3e38f, INFINITY, NAN, -INFINITY};
  int64_t first;
  EXPECT_EQ(sq::numerics::countNonFinite(
                f.data(), f.size(), sq::numerics::FloatFormat::F32, &first),
            3);
  EXPECT_EQ(first, 3);
  EXPECT_EQ(sq::numerics::countNonFinite(
                f.data(), 3, sq::numerics::FloatFormat::F32, &first),
            0);
  EXPECT_EQ(first, -1);
}

// narrowToBf16 (vectorized) gives floatToBf16's bits for every fp16
// pattern and for fp32 patterns covering ties, NaNs, Inf and carries into
// the exponent; lengths that leave tails of every size.
TEST(Float16, NarrowToBf16MatchesScalar) {
  std::vector<uint16_t> all(65536), got(65536);
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<uint16_t>(i);
  sq::numerics::narrowToBf16(all.data(), all.size(),
                             sq::numerics::FloatFormat::F16, got.data());
  for (size_t i = 0; i < all.size(); ++i)
    ASSERT_EQ(got[i],
              sq::numerics::floatToBf16(sq::numerics::halfToFloat(all[i])))
        << "fp16 bits " << i;
  std::mt19937 rng(3);
  std::vector<uint32_t> bits;
  for (uint32_t hi :
       {0x0000u, 0x3F80u, 0x7F7Fu, 0x7F80u, 0x7FC0u, 0xFF80u, 0x8000u, 0x0080u})
    for (uint32_t lo : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0x0001u})
      for (uint32_t odd : {0u, 1u})
        bits.push_back(((hi | odd) << 16) | lo);
  for (int i = 0; i < 10000; ++i)
    bits.push_back(rng());
  std::vector<float> f(bits.size());
  std::memcpy(f.data(), bits.data(), bits.size() * 4);
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9),
                   size_t(15), f.size()}) {
    std::vector<uint16_t> out(n + 1, 0xABCD);
    sq::numerics::narrowToBf16(f.data(), int64_t(n),
                               sq::numerics::FloatFormat::F32, out.data());
    for (size_t i = 0; i < n; ++i)
      ASSERT_EQ(out[i], sq::numerics::floatToBf16(f[i]))
          << "fp32 bits " << std::hex << bits[i];
    EXPECT_EQ(out[n], 0xABCD) << "wrote past " << n;
  }
  std::vector<uint16_t> copy(5);
  sq::numerics::narrowToBf16(all.data() + 100, 5,
                             sq::numerics::FloatFormat::BF16, copy.data());
  EXPECT_EQ(copy, std::vector<uint16_t>(all.begin() + 100, all.begin() + 105));
}

TEST(Float16, EveryBf16ConvertsExactly) {
  for (uint32_t b = 0; b < 65536; ++b) {
    uint32_t wantBits = b << 16;
    float got = sq::numerics::bf16ToFloat(static_cast<uint16_t>(b));
    EXPECT_EQ(std::memcmp(&wantBits, &got, 4), 0) << b;
  }
}

// float -> fp16 rounds to nearest even like the compiler's own conversion
// (overflow to Inf, subnormals, ties), over a stride of all float bit
// patterns plus the tie cases; every half round-trips.
TEST(Float16, NarrowingMatchesCompiler) {
  auto check = [](uint32_t fbits) {
    float f;
    std::memcpy(&f, &fbits, 4);
    _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    uint16_t got = sq::numerics::floatToHalf(f);
    if (std::isnan(f))
      EXPECT_TRUE(std::isnan(sq::numerics::halfToFloat(got))) << fbits;
    else
      ASSERT_EQ(got, want) << "float bits " << fbits;
  };
  for (uint64_t b = 0; b < (1ull << 32); b += 997)
    check(static_cast<uint32_t>(b));
  for (uint32_t b = 0; b < 65536; ++b) {
    float f = sq::numerics::halfToFloat(static_cast<uint16_t>(b));
    if (!std::isnan(f))
      EXPECT_EQ(sq::numerics::floatToHalf(f), b);
    // The float halfway above this half: a tie.
    uint32_t fb;
    std::memcpy(&fb, &f, 4);
    if (!std::isnan(f) && !std::isinf(f))
      check(fb + (1u << 12));
  }
}

TEST(Float16, Bf16NarrowingRoundsToNearestEven) {
  for (uint64_t b = 0; b < (1ull << 32); b += 991) {
    uint32_t fbits = static_cast<uint32_t>(b);
    float f;
    std::memcpy(&f, &fbits, 4);
    uint16_t got = sq::numerics::floatToBf16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(sq::numerics::bf16ToFloat(got)));
      continue;
    }
    // The two neighbours; the nearer wins, ties to the even one.
    uint16_t lo = static_cast<uint16_t>(fbits >> 16);
    double x = f, a = sq::numerics::bf16ToFloat(lo),
           c = sq::numerics::bf16ToFloat(static_cast<uint16_t>(lo + 1));
    if (std::isinf(c)) // rounding up past the largest finite: 2^128
      c = std::copysign(std::ldexp(1.0, 128), x);
    uint16_t want = std::fabs(x - a) < std::fabs(c - x)   ? lo
                    : std::fabs(x - a) > std::fabs(c - x) ? uint16_t(lo + 1)
                    : (lo & 1)                            ? uint16_t(lo + 1)
                                                          : lo;
    if ((fbits & 0xFFFF) == 0)
      want = lo;
    ASSERT_EQ(got, want) << "float bits " << fbits;
  }
}

} // namespace

#include "sq/Numerics/Buffer.h"

namespace {

// Small (heap) and large (huge-page mapping) buffers hold their values and
// move without copying.
TEST(FloatBuffer, SmallAndLargeMoveAndSwap) {
  for (int64_t n : {int64_t(0), int64_t(3), int64_t(3) << 20}) {
    sq::numerics::FloatBuffer a(n);
    ASSERT_EQ(a.size(), n);
    for (int64_t i = 0; i < n; ++i)
      a[i] = float(i % 1000);
    float *p = a.data();
    sq::numerics::FloatBuffer b(std::move(a));
    EXPECT_EQ(b.data(), p);
    EXPECT_EQ(a.size(), 0);
    for (int64_t i = 0; i < n; i += 4097)
      ASSERT_EQ(b[i], float(i % 1000));
    sq::numerics::FloatBuffer c(5);
    c = std::move(b);
    EXPECT_EQ(c.size(), n);
    float *q = c.release();
    EXPECT_EQ(q, p);
    sq::numerics::freeLarge(q, size_t(n) * sizeof(float));
  }
}

} // namespace

namespace {

// The bulk conversions (F16C-vectorized where the CPU has it) equal the
// scalar ones, element by element, tails included.
TEST(Float16, BulkConversionsEqualScalar) {
  std::vector<uint16_t> halves(65536 + 5);
  for (size_t i = 0; i < halves.size(); ++i)
    halves[i] = static_cast<uint16_t>(i);
  std::vector<float> wide(halves.size());
  sq::numerics::widenToFloat(halves.data(), halves.size(),
                             sq::numerics::FloatFormat::F16, wide.data());
  for (size_t i = 0; i < halves.size(); ++i) {
    float want = sq::numerics::halfToFloat(halves[i]);
    if (std::isnan(want))
      ASSERT_TRUE(std::isnan(wide[i])) << i;
    else
      ASSERT_EQ(std::memcmp(&want, &wide[i], 4), 0) << i;
  }
  std::vector<float> floats;
  std::mt19937 rng(1);
  for (int i = 0; i < 100003; ++i) {
    uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isnan(f))
      floats.push_back(f);
  }
  for (uint32_t b = 0; b < 65536; b += 3) { // ties between halves
    float f = sq::numerics::halfToFloat(static_cast<uint16_t>(b));
    uint32_t fb;
    std::memcpy(&fb, &f, 4);
    if (!std::isnan(f) && !std::isinf(f)) {
      fb += 1u << 12;
      std::memcpy(&f, &fb, 4);
      floats.push_back(f);
    }
  }
  for (auto format :
       {sq::numerics::FloatFormat::F16, sq::numerics::FloatFormat::BF16}) {
    std::vector<uint16_t> narrow(floats.size());
    sq::numerics::narrowFromFloat(floats.data(), floats.size(), format,
                                  narrow.data());
    for (size_t i = 0; i < floats.size(); ++i)
      ASSERT_EQ(narrow[i], format == sq::numerics::FloatFormat::F16
                               ? sq::numerics::floatToHalf(floats[i])
                               : sq::numerics::floatToBf16(floats[i]))
          << i;
  }
}

} // namespace
