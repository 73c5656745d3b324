//===- CudaModelTest.cpp - the C API of lib/Runtime/CUDA on a fake GPU ----===//
//
// A hand-written model program (what the NVPTX lowering generates: sqcu_*
// calls over slots), its manifest and weights sidecar, run through
// sq_runtime.h on the fake driver of fake_libcuda.c. The fake computes the
// embedding, fp32 linears and adds, so the logits (2 E[id] R W^T) are
// checked; every other kernel's launch (grid, block, shared memory,
// parameters) is checked against KernelABI.h. Also: every way to have no
// device, a PTX that does not load, a missing kernel or sidecar.
//
//===----------------------------------------------------------------------===//

#include "sq/Runtime/ModelFormat.h"
#include "sq/Runtime/sq_runtime.h"

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

// What the NVPTX lowering would compile into model.so. (The runtime declares
// the manifest `const char[]`; it is filled in by the fixture here.)
extern "C" char sq_model_manifest[8192];
char sq_model_manifest[8192];
extern "C" const char sq_model_ptx[] = "// a fake PTX module\n";

extern "C" {
int64_t sqcu_tokens(void *ctx);
void *sqcu_slot(void *ctx, int32_t slot, int64_t numel);
void sqcu_embedding(void *ctx, int32_t out, int32_t table, int64_t dim);
void sqcu_rms_norm(void *ctx, int32_t out, int32_t in, int32_t scale,
                   int64_t dim, double eps);
void sqcu_linear(void *ctx, int32_t out, int32_t in, int32_t weight,
                 int32_t bias, int64_t k, int64_t n);
void sqcu_qlinear(void *ctx, int32_t out, int32_t in, int32_t index,
                  int64_t hadamard, int64_t seed);
void sqcu_rope(void *ctx, int32_t out, int32_t in, int64_t dim, int64_t heads,
               double theta, int32_t interleaved, double factor,
               double lowFreqFactor, double highFreqFactor,
               double originalMaxPositions);
void sqcu_attention(void *ctx, int32_t out, int32_t q, int32_t k, int32_t v,
                    int32_t index);
void sqcu_rotate(void *ctx, int32_t out, int32_t in, int32_t rotation,
                 int64_t n, int64_t block, int32_t transposed);
void sqcu_hadamard(void *ctx, int32_t out, int32_t in, int64_t dim,
                   int64_t block, int64_t seed);
void sqcu_fake_quant(void *ctx, int32_t out, int32_t in, int64_t dim,
                     int32_t bits, int32_t sym, int64_t group, double clip,
                     int32_t perTensor);
void sqcu_add(void *ctx, int32_t out, int32_t a, int32_t b, int64_t dim);
void sqcu_mul(void *ctx, int32_t out, int32_t a, int32_t b, int64_t dim);
void sqcu_silu(void *ctx, int32_t out, int32_t a, int64_t dim);
void sqcu_logits(void *ctx, int32_t slot);

// Slots 0-5 are weights (embed, lm_head, q.weight, q.scales, norm, rot).
void sq_model_program(void *ctx) {
  if (sqcu_tokens(ctx) <= 0 || !sqcu_slot(ctx, 0, 0))
    return;
  sqcu_embedding(ctx, 6, 0, 64);
  sqcu_rms_norm(ctx, 7, 6, 4, 64, 1e-5);
  sqcu_qlinear(ctx, 8, 7, 0, 64, 0);
  sqcu_rope(ctx, 9, 8, 64, 2, 10000.0, 0, 0.0, 1.0, 4.0, 8192.0);
  sqcu_attention(ctx, 10, 9, 7, 8, 0);
  sqcu_silu(ctx, 11, 10, 64);
  sqcu_mul(ctx, 12, 11, 10, 64);
  sqcu_hadamard(ctx, 13, 12, 64, 32, 5);
  sqcu_fake_quant(ctx, 9, 13, 64, 4, 1, 0, 0.9, 0);
  sqcu_add(ctx, 10, 6, 6, 64);             // 2 E[id]
  sqcu_rotate(ctx, 11, 10, 5, 64, 64, 0);  // 2 E[id] R
  sqcu_linear(ctx, 12, 11, 1, -1, 64, 16); // 2 E[id] R W^T
  sqcu_logits(ctx, 12);
}
}

namespace {

using namespace sq;

constexpr int64_t V = 16, D = 64;

class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name(name) {
    const char *old = std::getenv(name);
    had = old != nullptr;
    if (had)
      previous = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had)
      setenv(name.c_str(), previous.c_str(), 1);
    else
      unsetenv(name.c_str());
  }

private:
  std::string name, previous;
  bool had = false;
};

using LaunchesFn = long (*)(const char *, unsigned *, unsigned *, unsigned *,
                            uint64_t *);
using LiveFn = long (*)();

struct Launch {
  long count = 0;
  unsigned grid[2] = {0, 0}, block = 0, smem = 0;
  uint64_t params[32] = {};
  int64_t l(int i) const { return int64_t(params[i]); }
  int32_t i(int i) const { return int32_t(params[i]); }
  float f(int i) const {
    float v;
    uint32_t bits = uint32_t(params[i]);
    std::memcpy(&v, &bits, 4);
    return v;
  }
};

class CudaModel : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir = "/tmp/sq-cuda-model-test-" + std::to_string(getpid());
    mkdir(dir.c_str(), 0755);
    path = dir + "/model.so";
    rt::Manifest m;
    m.vocabSize = V;
    m.hiddenSize = D;
    m.intermediateSize = D;
    m.numLayers = 1;
    m.numHeads = 2;
    m.numKvHeads = 2;
    m.headDim = 32;
    m.maxPositions = 32;
    m.bosTokenId = 1;
    m.eosTokenId = 2;
    m.description = "quantize w4a4kv4, rotate none";
    m.numSlots = 14;
    auto weight = [&](const char *name, unsigned bits, int64_t rows,
                      int64_t cols) {
      rt::WeightDesc w;
      w.slot = int(m.weights.size());
      w.name = name;
      w.packedBits = bits;
      w.rows = rows;
      w.cols = cols;
      m.weights.push_back(w);
    };
    weight("embed", 0, V, D);
    weight("lm_head", 0, V, D);
    weight("q.weight", 4, D, D);
    weight("q.scales", 0, D, 1);
    weight("norm", 0, 1, D);
    weight("rot", 0, D, D);
    rt::QLinearDesc q;
    q.weight = 2;
    q.scales = 3;
    q.n = D;
    q.k = D;
    q.weightQuant.bits = 4;
    q.actQuant.bits = 4;
    q.actQuant.symmetric = false;
    m.qlinears.push_back(q);
    rt::AttentionDesc a;
    a.heads = 2;
    a.kvHeads = 2;
    a.headDim = 32;
    a.scale = 1.0 / std::sqrt(32.0);
    a.keyQuant.bits = 4;
    a.keyQuant.symmetric = false;
    a.keyQuant.group = 32;
    m.attentions.push_back(a);
    std::string text = m.serialize();
    ASSERT_LT(text.size(), sizeof(sq_model_manifest));
    std::memcpy(sq_model_manifest, text.c_str(), text.size() + 1);

    std::mt19937 rng(11);
    std::normal_distribution<float> dist;
    embed.resize(V * D);
    head.resize(V * D);
    for (float &v : embed)
      v = dist(rng);
    for (float &v : head)
      v = dist(rng);
    // R: a signed permutation, not symmetric.
    rot.assign(D * D, 0.0f);
    for (int64_t i = 0; i < D; ++i)
      rot[i * D + (i * 5 + 3) % D] = i % 3 ? 1.0f : -1.0f;
    std::vector<uint8_t> qw(D * D / 2);
    for (uint8_t &b : qw)
      b = uint8_t(rng());
    std::vector<float> scales(D, 0.01f), norm(D, 1.0f);

    uint64_t headerBytes, total;
    std::vector<uint64_t> offsets;
    rt::planSidecar(m, headerBytes, offsets, total);
    std::string file(total, '\0');
    std::string header =
        rt::sidecarHeader(m, rt::fnv1a(text.data(), text.size()));
    std::memcpy(&file[0], header.data(), header.size());
    auto put = [&](int slot, const void *data, size_t bytes) {
      ASSERT_EQ(bytes, m.weights[slot].bytes());
      std::memcpy(&file[offsets[slot]], data, bytes);
    };
    put(0, embed.data(), embed.size() * 4);
    put(1, head.data(), head.size() * 4);
    put(2, qw.data(), qw.size());
    put(3, scales.data(), scales.size() * 4);
    put(4, norm.data(), norm.size() * 4);
    put(5, rot.data(), rot.size() * 4);
    std::ofstream(path + ".weights", std::ios::binary)
        .write(file.data(), std::streamsize(file.size()));

    void *fake = dlopen(SQ_FAKE_LIBCUDA, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(fake, nullptr) << dlerror();
    launches = reinterpret_cast<LaunchesFn>(dlsym(fake, "fake_cuda_launches"));
    live = reinterpret_cast<LiveFn>(dlsym(fake, "fake_cuda_live_allocations"));
    ASSERT_NE(launches, nullptr);
    ASSERT_NE(live, nullptr);
  }
  static void TearDownTestSuite() {
    std::remove((path + ".weights").c_str());
    rmdir(dir.c_str());
  }

  static Launch last(const char *kernel) {
    Launch l;
    l.count = launches(kernel, l.grid, &l.block, &l.smem, l.params);
    return l;
  }

  /// 2 E[id] R W^T.
  static std::vector<float> expected(int32_t id) {
    std::vector<float> x(D), y(D, 0.0f), out(V, 0.0f);
    for (int64_t i = 0; i < D; ++i)
      x[i] = embed[id * D + i] + embed[id * D + i];
    for (int64_t j = 0; j < D; ++j)
      for (int64_t i = 0; i < D; ++i)
        y[j] += x[i] * rot[i * D + j];
    for (int64_t v = 0; v < V; ++v)
      for (int64_t j = 0; j < D; ++j)
        out[v] += y[j] * head[v * D + j];
    return out;
  }

  /// Opens the model on the fake device, expecting failure with `code`;
  /// returns the message.
  static std::string openFails(sq_status code) {
    sq_error *err = nullptr;
    sq_model *m = sq_model_open(path.c_str(), &err);
    EXPECT_EQ(m, nullptr);
    EXPECT_EQ(sq_error_code(err), code) << sq_error_message(err);
    std::string message = sq_error_message(err);
    EXPECT_EQ(message.find('\n'), std::string::npos);
    sq_error_free(err);
    sq_model_free(m);
    return message;
  }

  static std::string dir, path;
  static std::vector<float> embed, head, rot;
  static LaunchesFn launches;
  static LiveFn live;
  ScopedEnv library{"SQ_CUDA_LIBRARY", SQ_FAKE_LIBCUDA};
  ScopedEnv mode{"FAKE_CUDA_MODE", "device"};
};

std::string CudaModel::dir, CudaModel::path;
std::vector<float> CudaModel::embed, CudaModel::head, CudaModel::rot;
LaunchesFn CudaModel::launches;
LiveFn CudaModel::live;

TEST_F(CudaModel, RunsThroughTheCApi) {
  long before = live();
  sq_error *err = nullptr;
  sq_model *m = sq_model_open(path.c_str(), &err);
  ASSERT_NE(m, nullptr) << sq_error_message(err);
  EXPECT_EQ(std::string(sq_model_description(m)),
            "quantize w4a4kv4, rotate none; target nvptx sm_86, device Fake "
            "GPU, 1/1 quantized linears on the integer path (1 sq_qgemm_s4, "
            "0 sq_qgemm_s8)");
  sq_model_config cfg;
  sq_model_get_config(m, &cfg);
  EXPECT_EQ(cfg.vocab_size, V);
  EXPECT_EQ(cfg.hidden_size, D);
  EXPECT_EQ(cfg.num_heads, 2);
  EXPECT_EQ(cfg.max_positions, 32);
  EXPECT_EQ(cfg.bos_token_id, 1);
  EXPECT_EQ(sq_model_vocab_size(m), V);

  sq_context *c = sq_context_create(m, 40, 2, &err);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(sq_error_code(err), SQ_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(sq_error_message(err),
               "sq_context_create: max_context 40 exceeds the model's context "
               "of 32 tokens");
  sq_error_free(err);
  c = sq_context_create(m, 8, 2, &err);
  ASSERT_NE(c, nullptr) << sq_error_message(err);

  // Prefill 2 x 3: the last token's logits of each sequence.
  const int32_t prompt[6] = {3, 7, 1, 15, 0, 9};
  std::vector<float> logits(2 * V);
  ASSERT_EQ(sq_prefill(c, prompt, 2, 3, logits.data(), &err), SQ_OK)
      << sq_error_message(err);
  EXPECT_EQ(sq_context_length(c), 3);
  for (int b = 0; b < 2; ++b) {
    std::vector<float> want = expected(prompt[b * 3 + 2]);
    for (int v = 0; v < V; ++v)
      EXPECT_NEAR(logits[b * V + v], want[v], 1e-4) << b << "," << v;
  }

  Launch q = last("sq_quantize");
  EXPECT_EQ(q.grid[0], 6u);
  EXPECT_EQ(q.block, 256u);
  EXPECT_EQ(q.smem, 4u * D);
  EXPECT_EQ(q.l(4), 6); // m
  EXPECT_EQ(q.l(5), D); // k
  EXPECT_EQ(q.l(6), D); // kpad
  EXPECT_EQ(q.i(7), 4); // bits
  EXPECT_EQ(q.i(8), 0); // asymmetric
  EXPECT_EQ(q.l(9), 0); // per token
  EXPECT_EQ(q.f(10), 1.0f);
  EXPECT_EQ(q.l(11), 0); // no factor: 64 = 1 x 2^6
  EXPECT_EQ(q.l(12), 1);
  EXPECT_EQ(q.i(13), 1); // the fused Hadamard
  Launch g = last("sq_qgemm_s4");
  EXPECT_EQ(g.count, 1);
  EXPECT_EQ(last("sq_qgemm_s8").count, 0);
  EXPECT_EQ(g.grid[0], 1u);
  EXPECT_EQ(g.grid[1], 1u);
  EXPECT_EQ(g.block, 128u);
  EXPECT_EQ(g.params[1], q.params[0]); // codes
  EXPECT_EQ(g.params[2], q.params[1]); // ascales
  EXPECT_EQ(g.params[3], q.params[2]); // azeros
  EXPECT_NE(g.params[4], 0u);          // w
  EXPECT_NE(g.params[5], 0u);          // wscales
  EXPECT_NE(g.params[6], 0u);          // wsums
  EXPECT_EQ(g.params[7], 0u);          // no bias
  EXPECT_EQ(g.l(8), 6);
  EXPECT_EQ(g.l(9), D);
  EXPECT_EQ(g.l(10), D);
  EXPECT_EQ(g.l(11), D); // blockk
  EXPECT_EQ(g.l(12), 1);
  EXPECT_EQ(g.l(13), 1);
  // The weight scales are the sidecar's, uploaded as they are.
  float s0 = 0;
  std::memcpy(&s0, reinterpret_cast<void *>(uintptr_t(g.params[5])), 4);
  EXPECT_EQ(s0, 0.01f);

  Launch h = last("sq_hadamard"); // 64 values in blocks of 32
  EXPECT_EQ(h.grid[0], 12u);
  EXPECT_EQ(h.block, 256u);
  EXPECT_EQ(h.smem, 4u * 32);
  EXPECT_EQ(h.l(2), 12);
  EXPECT_EQ(h.l(3), 32);
  EXPECT_EQ(h.params[4], 0u);
  EXPECT_EQ(h.l(5), 1);
  Launch fq = last("sq_fake_quant");
  EXPECT_EQ(fq.grid[0], 6u);
  EXPECT_EQ(fq.l(2), 6);
  EXPECT_EQ(fq.l(3), D);
  EXPECT_EQ(fq.i(4), 4);
  EXPECT_EQ(fq.i(5), 1);
  EXPECT_EQ(fq.l(6), 0);
  EXPECT_EQ(fq.f(7), 0.9f);
  Launch r = last("sq_rope");
  EXPECT_EQ(r.grid[0], 6u);
  EXPECT_EQ(r.block, 128u);
  EXPECT_EQ(r.l(3), 6);
  EXPECT_EQ(r.l(4), D);
  EXPECT_EQ(r.l(5), 2);
  EXPECT_EQ(r.f(6), 10000.0f);
  EXPECT_EQ(r.i(7), 0);
  {
    const int64_t *pos = reinterpret_cast<const int64_t *>(r.params[2]);
    for (int t = 0; t < 6; ++t)
      EXPECT_EQ(pos[t], t % 3);
  }
  Launch n = last("sq_rms_norm");
  EXPECT_EQ(n.grid[0], 6u);
  EXPECT_EQ(n.block, 256u);
  EXPECT_NEAR(n.f(5), 1e-5f, 1e-12);
  Launch e = last("sq_embedding");
  EXPECT_EQ(e.grid[0], 6u);
  EXPECT_EQ(e.block, 128u);
  EXPECT_EQ(e.i(5), 0);
  Launch s = last("sq_silu");
  EXPECT_EQ(s.grid[0], 2u); // ceil(6 * 64 / 256)
  EXPECT_EQ(s.block, 256u);
  EXPECT_EQ(s.l(2), 6 * D);
  Launch lin = last("sq_linear16");
  EXPECT_EQ(lin.grid[0], 2u); // ceil(16 / 8)
  EXPECT_EQ(lin.grid[1], 6u);
  EXPECT_EQ(lin.block, 256u);

  Launch kv = last("sq_kv_append"); // the values: fp32
  EXPECT_EQ(kv.count, 2);
  EXPECT_EQ(kv.grid[0], 6u);
  EXPECT_EQ(kv.block, 128u);
  EXPECT_EQ(kv.params[0], 0u);
  EXPECT_NE(kv.params[3], 0u);
  EXPECT_EQ(kv.l(5), 2); // batch
  EXPECT_EQ(kv.l(6), 3); // seq
  EXPECT_EQ(kv.l(7), 0); // cached
  EXPECT_EQ(kv.l(8), 8); // capacity
  EXPECT_EQ(kv.l(9), D); // features
  EXPECT_EQ(kv.i(10), 0);
  Launch at = last("sq_attention");
  EXPECT_EQ(at.grid[0], 4u); // batch * heads
  EXPECT_EQ(at.grid[1], 3u); // seq
  EXPECT_EQ(at.block, 128u);
  EXPECT_EQ(at.smem, 4u * 3);
  EXPECT_NE(at.params[2], 0u); // key codes
  EXPECT_NE(at.params[3], 0u); // key scales
  EXPECT_NE(at.params[4], 0u); // key zeros
  EXPECT_EQ(at.params[5], 0u); // no fp keys
  EXPECT_EQ(at.params[6], 0u); // no value codes
  EXPECT_NE(at.params[9], 0u); // fp values
  EXPECT_EQ(at.l(14), 2);
  EXPECT_EQ(at.l(15), 2);
  EXPECT_EQ(at.l(16), 32);
  EXPECT_NEAR(at.f(17), 1.0 / std::sqrt(32.0), 1e-7);
  EXPECT_EQ(at.i(18), 1);
  EXPECT_EQ(at.l(19), 0);  // no sliding window
  EXPECT_EQ(at.i(20), 4);  // kbits
  EXPECT_EQ(at.i(21), 0);  // ksym
  EXPECT_EQ(at.l(22), 32); // kgroup
  EXPECT_EQ(at.i(23), 0);  // vbits
  EXPECT_EQ(at.l(25), D);  // vgroup: the whole row

  // Decode one token per sequence.
  const int32_t next[2] = {4, 12};
  ASSERT_EQ(sq_decode(c, next, logits.data(), &err), SQ_OK)
      << sq_error_message(err);
  EXPECT_EQ(sq_context_length(c), 4);
  for (int b = 0; b < 2; ++b) {
    std::vector<float> want = expected(next[b]);
    for (int v = 0; v < V; ++v)
      EXPECT_NEAR(logits[b * V + v], want[v], 1e-4);
  }
  at = last("sq_attention");
  EXPECT_EQ(at.grid[1], 1u);
  EXPECT_EQ(at.smem, 4u * 4);
  EXPECT_EQ(at.l(12), 3); // cached

  // The API's argument checks, as in the CPU runtime.
  const int32_t bad[2] = {4, 16};
  EXPECT_EQ(sq_decode(c, bad, logits.data(), &err), SQ_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(sq_error_message(err), "sq_decode: token id 16 at index 1 is "
                                      "outside the vocabulary [0, 16)");
  sq_error_free(err);
  EXPECT_EQ(sq_prefill(c, prompt, 1, 3, logits.data(), &err),
            SQ_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(sq_error_message(err),
               "sq_prefill: batch 1 differs from the cached sequences' 2 "
               "(reset the context first)");
  sq_error_free(err);
  std::vector<int32_t> many(2 * 5, 1);
  EXPECT_EQ(sq_prefill(c, many.data(), 2, 5, logits.data(), &err),
            SQ_ERR_CONTEXT_FULL);
  EXPECT_STREQ(sq_error_message(err), "sq_prefill: 4 cached + 5 new tokens "
                                      "exceed the context of 8");
  sq_error_free(err);
  EXPECT_EQ(sq_prefill(c, nullptr, 2, 5, logits.data(), &err),
            SQ_ERR_INVALID_ARGUMENT);
  sq_error_free(err);

  // Every position after a reset.
  sq_context_reset(c);
  EXPECT_EQ(sq_context_length(c), 0);
  std::vector<float> all(2 * 3 * V);
  ASSERT_EQ(sq_forward(c, prompt, 2, 3, all.data(), &err), SQ_OK)
      << sq_error_message(err);
  for (int t = 0; t < 6; ++t) {
    std::vector<float> want = expected(prompt[t]);
    for (int v = 0; v < V; ++v)
      EXPECT_NEAR(all[t * V + v], want[v], 1e-4) << t;
  }
  EXPECT_EQ(last("sq_qgemm_s4").l(8), 6);

  sq_context_free(c);
  sq_model_free(m);
  EXPECT_EQ(live(), before); // every device allocation freed
}

TEST_F(CudaModel, S8KernelOnHopper) {
  ScopedEnv sm("FAKE_CUDA_SM", "90");
  sq_error *err = nullptr;
  sq_model *m = sq_model_open(path.c_str(), &err);
  ASSERT_NE(m, nullptr) << sq_error_message(err);
  EXPECT_NE(std::string(sq_model_description(m))
                .find("target nvptx sm_90, device Fake GPU, 1/1 quantized "
                      "linears on the integer path (0 sq_qgemm_s4, 1 "
                      "sq_qgemm_s8)"),
            std::string::npos)
      << sq_model_description(m);
  sq_context *c = sq_context_create(m, 4, 1, &err);
  ASSERT_NE(c, nullptr) << sq_error_message(err);
  long before = last("sq_qgemm_s8").count;
  const int32_t ids[2] = {5, 6};
  std::vector<float> logits(V);
  ASSERT_EQ(sq_prefill(c, ids, 1, 2, logits.data(), &err), SQ_OK)
      << sq_error_message(err);
  EXPECT_EQ(last("sq_qgemm_s8").count, before + 1);
  EXPECT_EQ(last("sq_qgemm_s8").l(10), D); // kpad
  sq_context_free(c);
  sq_model_free(m);
}

TEST_F(CudaModel, NoDevice) {
  long before = live();
  {
    ScopedEnv noinit("FAKE_CUDA_MODE", "noinit");
    EXPECT_EQ(openFails(SQ_ERR_NO_DEVICE),
              path + ": no CUDA device: CUDA error CUDA_ERROR_NO_DEVICE (no "
                     "CUDA-capable device is detected) in cuInit");
  }
  {
    ScopedEnv zero("FAKE_CUDA_MODE", "zero");
    EXPECT_EQ(openFails(SQ_ERR_NO_DEVICE),
              path + ": no CUDA device: cuDeviceGetCount found 0 devices");
  }
  {
    ScopedEnv missing("SQ_CUDA_LIBRARY", "/nonexistent/libcuda.so.1");
    std::string message = openFails(SQ_ERR_NO_DEVICE);
    EXPECT_EQ(message.rfind(path + ": no CUDA device: no NVIDIA driver: "
                                   "/nonexistent/libcuda.so.1 not found (",
                            0),
              0u)
        << message;
  }
  EXPECT_EQ(live(), before);
}

/// This machine's driver: no GPU gives SQ_ERR_NO_DEVICE; with a GPU the
/// fake PTX does not load (skipped).
TEST_F(CudaModel, DefaultDriver) {
  ScopedEnv env("SQ_CUDA_LIBRARY", nullptr);
  sq_error *err = nullptr;
  sq_model *m = sq_model_open(path.c_str(), &err);
  if (sq_error_code(err) != SQ_ERR_NO_DEVICE) {
    std::string message = sq_error_message(err);
    sq_error_free(err);
    sq_model_free(m);
    GTEST_SKIP() << "a CUDA device is present: " << message;
  }
  EXPECT_EQ(m, nullptr);
  std::string message = sq_error_message(err);
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u);
  EXPECT_TRUE(message.find("libcuda.so.1 not found") != std::string::npos ||
              message.find("CUDA error") != std::string::npos ||
              message.find("no CUDA device") != std::string::npos)
      << message;
  sq_error_free(err);
}

TEST_F(CudaModel, PtxDoesNotLoad) {
  ScopedEnv ptx("FAKE_CUDA_PTX_ERROR", "1");
  std::string message = openFails(SQ_ERR_INTERNAL);
  EXPECT_EQ(message, path + ": the model's PTX does not load on Fake GPU "
                            "(sm_86): CUDA error CUDA_ERROR_INVALID_PTX (a "
                            "PTX JIT compilation failed) in "
                            "cuModuleLoadDataEx: ptxas fatal   : fake error");
}

TEST_F(CudaModel, MissingKernels) {
  {
    ScopedEnv missing("FAKE_CUDA_MISSING", "sq_attention");
    EXPECT_EQ(openFails(SQ_ERR_FORMAT),
              path + ": the model's PTX lacks the kernel sq_attention");
  }
  // sq_qgemm_s4 is optional: sq_qgemm_s8 instead.
  ScopedEnv missing("FAKE_CUDA_MISSING", "sq_qgemm_s4");
  sq_error *err = nullptr;
  sq_model *m = sq_model_open(path.c_str(), &err);
  ASSERT_NE(m, nullptr) << sq_error_message(err);
  EXPECT_NE(std::string(sq_model_description(m))
                .find("(0 sq_qgemm_s4, 1 sq_qgemm_s8)"),
            std::string::npos);
  sq_model_free(m);
}

TEST_F(CudaModel, MissingSidecar) {
  std::string other = dir + "/other.so";
  sq_error *err = nullptr;
  EXPECT_EQ(sq_model_open(other.c_str(), &err), nullptr);
  EXPECT_EQ(sq_error_code(err), SQ_ERR_IO);
  EXPECT_NE(std::string(sq_error_message(err)).find(other + ".weights"),
            std::string::npos)
      << sq_error_message(err);
  sq_error_free(err);
}

TEST_F(CudaModel, NullArguments) {
  sq_error *err = nullptr;
  EXPECT_EQ(sq_context_create(nullptr, 8, 1, &err), nullptr);
  EXPECT_STREQ(sq_error_message(err), "sq_context_create: model is NULL");
  sq_error_free(err);
  EXPECT_EQ(sq_forward(nullptr, nullptr, 1, 1, nullptr, &err),
            SQ_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(sq_error_message(err), "sq_forward: context or tokens is NULL");
  sq_error_free(err);
  EXPECT_EQ(sq_runtime_abi_version(), SQ_RUNTIME_ABI_VERSION);
  EXPECT_STREQ(sq_model_description(nullptr), "");
  EXPECT_EQ(sq_model_vocab_size(nullptr), 0);
}

} // namespace
