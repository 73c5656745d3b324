//===- ModelFormatTest.cpp - the manifest of a compiled model -------------===//

#include "sq/Runtime/ModelFormat.h"

#include <gtest/gtest.h>

using namespace sq::rt;

namespace {

Manifest sample() {
  Manifest m;
  m.vocabSize = 32;
  m.hiddenSize = 16;
  m.numLayers = 1;
  m.description = "a test\nwith a newline";
  m.numSlots = 4;
  WeightDesc w;
  w.slot = 0;
  w.name = "model.embed_tokens.weight";
  w.rows = 32;
  w.cols = 16;
  w.storage = FloatStorage::F16;
  m.weights.push_back(w);
  w.slot = 1;
  w.name = "q proj (with spaces)";
  w.packedBits = 4;
  w.storage = FloatStorage::F32;
  w.cols = 15;
  m.weights.push_back(w);
  QLinearDesc q;
  q.weight = 1;
  q.scales = 0;
  q.n = 32;
  q.k = 15;
  q.weightQuant.bits = 4;
  q.actQuant.bits = 8;
  q.actQuant.symmetric = false;
  q.actQuant.clip = 0.9;
  m.qlinears.push_back(q);
  AttentionDesc a;
  a.heads = 4;
  a.kvHeads = 2;
  a.headDim = 4;
  a.scale = 0.5;
  a.keyQuant.bits = 4;
  a.keyQuant.group = 4;
  m.attentions.push_back(a);
  a.window = 8; // a sliding window: " window 8" ends its line
  m.attentions.push_back(a);
  return m;
}

TEST(ModelFormat, RoundTrips) {
  Manifest m = sample();
  std::string text = m.serialize();
  Manifest back;
  std::string error;
  ASSERT_TRUE(Manifest::parse(text, back, error)) << error;
  EXPECT_EQ(back.serialize(), text);
  EXPECT_EQ(back.description, "a test with a newline");
  ASSERT_EQ(back.weights.size(), 2u);
  EXPECT_EQ(back.weights[1].name, "q proj (with spaces)");
  EXPECT_EQ(back.weights[0].bytes(), 32u * 16 * 2);
  EXPECT_EQ(back.weights[1].bytes(), 32u * 8); // 15 nibbles -> 8 bytes
  EXPECT_EQ(back.qlinears[0].actQuant.clip, 0.9);
  EXPECT_EQ(back.attentions[0].keyQuant.group, 4);
  ASSERT_EQ(back.attentions.size(), 2u);
  EXPECT_EQ(back.attentions[0].window, 0);
  EXPECT_EQ(back.attentions[1].window, 8);
  EXPECT_NE(text.find(" window 8\n"), std::string::npos);
}

TEST(ModelFormat, RejectsBadManifests) {
  std::string good = sample().serialize();
  Manifest m;
  std::string error;
  EXPECT_FALSE(Manifest::parse("", m, error));
  // The previous version (no kernel layouts) and a future one.
  EXPECT_FALSE(Manifest::parse("sq-model 1\nend\n", m, error));
  EXPECT_NE(error.find("manifest version 1"), std::string::npos) << error;
  EXPECT_FALSE(Manifest::parse("sq-model 3\nend\n", m, error));
  EXPECT_NE(error.find("manifest version 3"), std::string::npos) << error;
  // Truncated: no "end".
  EXPECT_FALSE(Manifest::parse(good.substr(0, good.size() / 2), m, error));
  // Found by fuzzing: a second "slots" line below a listed weight's slot.
  EXPECT_FALSE(Manifest::parse("sq-model 2\nslots 3\nweight 2 0 0 1 4 0 w\n"
                               "slots 1\nend\n",
                               m, error));
  EXPECT_NE(error.find("line 4"), std::string::npos) << error;
  EXPECT_FALSE(Manifest::parse(
      "sq-model 2\nslots 2\nweight 5 0 0 1 4 0 w\nend\n", m, error));
  EXPECT_FALSE(Manifest::parse("sq-model 2\nslots 2\nqlinear 0 1 -1 -1 4 4 "
                               "9:sym:0:1 none\nend\n",
                               m, error));
  EXPECT_FALSE(Manifest::parse("sq-model 2\nslots 2\nattention 3 2 4 0.5 1 "
                               "none none\nend\n",
                               m, error)); // 3 heads over 2 KV heads
  for (const char *tail : {"window 0", "window", "windows 4", "window 4 5"})
    EXPECT_FALSE(Manifest::parse(std::string("sq-model 2\nslots 2\nattention "
                                             "4 2 4 0.5 1 none none ") +
                                     tail + "\nend\n",
                                 m, error))
        << tail;
  // A window needs causal attention.
  EXPECT_FALSE(Manifest::parse("sq-model 2\nslots 2\nattention 4 2 4 0.5 0 "
                               "none none window 4\nend\n",
                               m, error));
  // Declared sizes that would overflow the sidecar's byte arithmetic.
  EXPECT_FALSE(Manifest::parse("sq-model 2\nslots 1\nweight 0 0 0 "
                               "4611686018427387904 4 0 w\nend\n",
                               m, error));
  EXPECT_NE(error.find("too large"), std::string::npos) << error;
  EXPECT_FALSE(Manifest::parse("sq-model 2\nslots 1\nweight 0 0 0 "
                               "3037000500 3037000500 0 w\nend\n",
                               m, error));
  EXPECT_FALSE(Manifest::parse("sq-model 2\nbogus\nend\n", m, error));
  EXPECT_NE(error.find("unknown entry 'bogus'"), std::string::npos);
}

TEST(ModelFormat, SidecarLayoutIsAligned) {
  Manifest m = sample();
  uint64_t header, total;
  std::vector<uint64_t> offsets;
  planSidecar(m, header, offsets, total);
  EXPECT_EQ(header % kSidecarAlign, 0u);
  for (uint64_t o : offsets)
    EXPECT_EQ(o % kSidecarAlign, 0u);
  EXPECT_EQ(sidecarHeader(m, 42).size(), header);
  EXPECT_GE(total, offsets.back() + m.weights.back().bytes());
}

} // namespace
