//===- Kernels.cpp - fp32 kernels of the reference executor ---------------===//

#include "Kernels.h"

#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Layers.h"
#include "sq/Numerics/Quantize.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace sq {
namespace exec {

static Tensor like(const std::vector<int64_t> &shape) {
  Tensor t;
  t.shape = shape;
  t.data = std::make_shared<FloatBuffer>(t.numel());
  return t;
}

std::shared_ptr<FloatBuffer> floatValues(const Tensor &t) {
  if (t.packed) {
    auto out = std::make_shared<FloatBuffer>(t.numel());
    widenRows(t, 0, t.shape[0], out->data());
    return out;
  }
  if (!t.half)
    return std::make_shared<FloatBuffer>(*t.data);
  auto out = std::make_shared<FloatBuffer>(t.numel());
  numerics::widenToFloat(t.half, t.numel(), t.format, out->data());
  if (t.roundToBF16)
    for (float &v : *out)
      v = numerics::bf16ToFloat(numerics::floatToBf16(v));
  return out;
}

void widenRows(const Tensor &w, int64_t row, int64_t count, float *out) {
  int64_t cols = w.shape.back();
  if (w.packed) {
    for (int64_t r = 0; r < count; ++r)
      numerics::widenToFloat(w.packed->row(row + r), cols,
                             numerics::FloatFormat::BF16, out + r * cols);
    return;
  }
  if (!w.half) {
    std::memcpy(out, w.data->data() + row * cols, count * cols * sizeof(float));
    return;
  }
  numerics::widenToFloat(static_cast<const char *>(w.half) +
                             row * cols * numerics::bytesPerValue(w.format),
                         count * cols, w.format, out);
  if (w.roundToBF16)
    for (int64_t i = 0; i < count * cols; ++i)
      out[i] = numerics::bf16ToFloat(numerics::floatToBf16(out[i]));
}

/// Rows of a 16-bit weight widened per panel: about 1 MiB of fp32, so that
/// a panel stays in the cache while sgemm reads it.
int64_t panelRows(int64_t cols) {
  return std::max<int64_t>(16, (int64_t(1) << 18) / std::max<int64_t>(cols, 1));
}

numerics::PackedMatrix packRows(const Tensor &w, int64_t row, int64_t count) {
  int64_t cols = w.shape.back();
  return numerics::PackedMatrix::fromBits(
      static_cast<const char *>(w.half) +
          row * cols * numerics::bytesPerValue(w.format),
      w.format, count, cols);
}

int64_t packedPanelRows(int64_t cols) {
  return std::max<int64_t>(32, (int64_t(1) << 21) / std::max<int64_t>(cols, 1) /
                                   32 * 32);
}

bool embedding(const Tensor &table, const Tensor &ids, Tensor &out,
               std::string &error) {
  int64_t vocab = table.shape[0], dim = table.shape[1];
  std::vector<int64_t> shape = ids.shape;
  shape.push_back(dim);
  out = like(shape);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    int64_t id = (*ids.ints)[i];
    if (id < 0 || id >= vocab) {
      error = "token id " + std::to_string(id) + " is outside [0, " +
              std::to_string(vocab) + ")";
      return false;
    }
    widenRows(table, id, 1, out.data->data() + i * dim);
  }
  return true;
}

void rmsNorm(const Tensor &x, const Tensor *scale, double eps, Tensor &out) {
  int64_t f = x.lastDim(), rows = x.numel() / f;
  out = like(x.shape);
  const float *in = x.data->data(), *s = scale ? scale->data->data() : nullptr;
  float *o = out.data->data();
  forRows(rows, f, [&](int64_t r0, int64_t r1) {
    numerics::rmsNormRows(in + r0 * f, s, r1 - r0, f, eps, o + r0 * f);
  });
}

void linear(const Tensor &x, const Tensor &w, const Tensor *bias, Tensor &out) {
  int64_t k = x.lastDim(), m = x.numel() / k, n = w.shape[0];
  std::vector<int64_t> shape = x.shape;
  shape.back() = n;
  out = like(shape);
  if (w.packed) {
    numerics::gemm(m, x.data->data(), k, *w.packed, numerics::Transpose::Yes,
                   out.data->data(), n);
  } else if (w.half && w.roundToBF16) {
    // Output columns [j, j + rows) from a panel of W packed in bf16.
    int64_t p = std::min(n, packedPanelRows(k));
    for (int64_t j = 0; j < n; j += p) {
      int64_t rows = std::min(p, n - j);
      numerics::gemm(m, x.data->data(), k, packRows(w, j, rows),
                     numerics::Transpose::Yes, out.data->data() + j, n);
    }
  } else if (!w.half) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f,
                x.data->data(), k, w.data->data(), k, 0.0f, out.data->data(),
                n);
  } else { // output columns [j, j + rows) from a widened panel of W
    int64_t p = std::min(n, panelRows(k));
    FloatBuffer panel(p * k);
    for (int64_t j = 0; j < n; j += p) {
      int64_t rows = std::min(p, n - j);
      widenRows(w, j, rows, panel.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rows, k, 1.0f,
                  x.data->data(), k, panel.data(), k, 0.0f,
                  out.data->data() + j, n);
    }
  }
  if (bias)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        (*out.data)[i * n + j] += (*bias->data)[j];
}

void rope(const Tensor &x, const Tensor &positions, int64_t heads, double theta,
          bool interleaved, Tensor &out, const numerics::RopeScaling &scaling) {
  int64_t f = x.lastDim(), tokens = x.numel() / f;
  out = like(x.shape);
  const float *in = x.data->data();
  const int64_t *pos = positions.ints->data();
  float *o = out.data->data();
  forRows(tokens, f, [&](int64_t t0, int64_t t1) {
    numerics::ropeRows(in + t0 * f, pos + t0, t1 - t0, f, heads, theta,
                       interleaved, o + t0 * f, scaling);
  });
}

void attention(const Tensor &q, const Tensor &k, const Tensor &v,
               const FloatBuffer &cacheK, const FloatBuffer &cacheV,
               int64_t cached, int64_t heads, int64_t kvHeads, double scale,
               bool causal, int64_t window, Tensor &out, Tensor &presentK,
               Tensor &presentV, bool bf16) {
  int64_t batch = q.shape[0], seq = q.shape[1], qf = q.shape[2];
  int64_t newKv = k.shape[1], kvf = k.shape[2], d = qf / heads;
  int64_t total = cached + newKv, group = heads / kvHeads;
  // present = cache ++ new, per sequence.
  presentK = like({batch, total, kvf});
  presentV = like({batch, total, kvf});
  for (int64_t b = 0; b < batch; ++b) {
    auto append = [&](const FloatBuffer &cache, const Tensor &fresh,
                      Tensor &dst) {
      float *o = dst.data->data() + b * total * kvf;
      if (cached)
        std::memcpy(o, cache.data() + b * cached * kvf,
                    cached * kvf * sizeof(float));
      std::memcpy(o + cached * kvf, fresh.data->data() + b * newKv * kvf,
                  newKv * kvf * sizeof(float));
    };
    append(cacheK, k, presentK);
    append(cacheV, v, presentV);
  }
  out = like(q.shape);
  int64_t offset = total - seq; // query i is at key position i + offset
  if (bf16) {
    float fscale = static_cast<float>(scale);
    numerics::ThreadPool::global().parallelFor(
        batch * kvHeads, [&](int64_t t0, int64_t t1) {
          FloatBuffer scores(std::min(seq, kAttentionBlock) * total);
          for (int64_t t = t0; t < t1; ++t) {
            int64_t b = t / kvHeads, g = t % kvHeads;
            const float *kb = presentK.data->data() + b * total * kvf + g * d;
            const float *vb = presentV.data->data() + b * total * kvf + g * d;
            for (int64_t h = g * group; h < (g + 1) * group; ++h)
              for (int64_t i0 = 0; i0 < seq; i0 += kAttentionBlock) {
                int64_t i1 = std::min(seq, i0 + kAttentionBlock);
                int64_t hi = attentionBlockKeys(offset, i1, total, causal);
                const float *qb = q.data->data() + (b * seq + i0) * qf + h * d;
                attentionProbsBF16(qb, qf, kb, kvf, i1 - i0, d, hi, offset + i0,
                                   fscale, causal, window, scores.data());
                numerics::gemmBF16(
                    numerics::Transpose::No, numerics::Transpose::No, i1 - i0,
                    d, hi, 1.0f, scores.data(), hi, vb, kvf, 0.0f,
                    out.data->data() + (b * seq + i0) * qf + h * d, qf);
              }
          }
        });
    return;
  }
  FloatBuffer scores(seq * total);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      int64_t g = h / group;
      const float *qb = q.data->data() + b * seq * qf + h * d;
      const float *kb = presentK.data->data() + b * total * kvf + g * d;
      const float *vb = presentV.data->data() + b * total * kvf + g * d;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, seq, total, d,
                  static_cast<float>(scale), qb, qf, kb, kvf, 0.0f,
                  scores.data(), total);
      forRows(seq, total, [&](int64_t i0, int64_t i1) {
        numerics::attentionSoftmaxRows(scores.data() + i0 * total, i1 - i0,
                                       total, offset + i0, causal, window);
      });
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, seq, d, total,
                  1.0f, scores.data(), total, vb, kvf, 0.0f,
                  out.data->data() + b * seq * qf + h * d, qf);
    }
}

void attentionProbsBF16(const float *q, int64_t qf, const float *k, int64_t kvf,
                        int64_t rows, int64_t d, int64_t hi, int64_t position,
                        float scale, bool causal, int64_t window, float *p) {
  numerics::gemmBF16(numerics::Transpose::No, numerics::Transpose::Yes, rows,
                     hi, d, scale, q, qf, k, kvf, 0.0f, p, hi);
  for (int64_t i = 0; i < rows; ++i) {
    int64_t lo, visible;
    numerics::visibleKeys(position + i, hi, causal, window, lo, visible);
    numerics::softmaxRange(p + i * hi, lo, visible, hi);
  }
}

void silu(const Tensor &x, Tensor &out) {
  out = like(x.shape);
  const float *in = x.data->data();
  float *o = out.data->data();
  forValues(x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      o[i] = in[i] / (1.0f + std::exp(-in[i]));
  });
}

void binary(const Tensor &a, const Tensor &b, bool add, Tensor &out) {
  out = like(a.shape);
  const float *x = a.data->data(), *y = b.data->data();
  float *o = out.data->data();
  forValues(a.numel(), [&](int64_t b, int64_t e) {
    if (add)
      for (int64_t i = b; i < e; ++i)
        o[i] = x[i] + y[i];
    else
      for (int64_t i = b; i < e; ++i)
        o[i] = x[i] * y[i];
  });
}

void rotate(const Tensor &x, const Tensor &r, bool transposed, Tensor &out,
            bool bf16) {
  int64_t n = r.shape[0], rows = x.numel() / n;
  out = like(x.shape);
  if (bf16) {
    numerics::gemmBF16(numerics::Transpose::No,
                       transposed ? numerics::Transpose::Yes
                                  : numerics::Transpose::No,
                       rows, n, n, 1.0f, x.data->data(), n, r.data->data(), n,
                       0.0f, out.data->data(), n);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans,
              transposed ? CblasTrans : CblasNoTrans, rows, n, n, 1.0f,
              x.data->data(), n, r.data->data(), n, 0.0f, out.data->data(), n);
}

bool orthogonalTransformRows(const float *x, int64_t rows, int64_t n,
                             uint64_t seed, bool transpose, float *out) {
  if (numerics::preferDenseTransform(n)) {
    const std::vector<float> &t = numerics::denseTransform(n, seed);
    cblas_sgemm(CblasRowMajor, CblasNoTrans,
                transpose ? CblasTrans : CblasNoTrans, rows, n, n, 1.0f, x, n,
                t.data(), n, 0.0f, out, n);
    return true;
  }
  forRows(rows, n, [&](int64_t r0, int64_t r1) {
    if (out != x)
      std::memcpy(out + r0 * n, x + r0 * n, (r1 - r0) * n * sizeof(float));
    for (int64_t r = r0; r < r1; ++r) {
      if (transpose)
        numerics::orthogonalTransformTransposeInPlace(out + r * n, n, seed);
      else
        numerics::orthogonalTransformInPlace(out + r * n, n, seed);
    }
  });
  return true;
}

bool hadamard(const Tensor &x, int64_t block, uint64_t seed, Tensor &out,
              std::string &error) {
  if (block <= 0 || x.numel() % block) {
    error = "invalid Hadamard size " + std::to_string(block) + " for " +
            std::to_string(x.numel()) + " elements";
    return false;
  }
  out = like(x.shape);
  return orthogonalTransformRows(x.data->data(), x.numel() / block, block, seed,
                                 /*transpose=*/false, out.data->data());
}

numerics::QuantGrid fakeQuantGrid(unsigned bits, bool symmetric,
                                  int granularity, int64_t groupSize,
                                  double clip) {
  numerics::QuantGrid grid;
  grid.bits = bits;
  grid.symmetric = symmetric;
  grid.clip = clip;
  grid.group = granularity == 3 ? groupSize : 0;
  return grid;
}

int64_t fakeQuantCols(const Tensor &x, int granularity) {
  // per_tensor: one row of everything; otherwise rows of the last dim.
  return granularity == 0 ? x.numel() : x.lastDim();
}

void fakeQuant(const Tensor &x, unsigned bits, bool symmetric, int granularity,
               int64_t groupSize, double clip, Tensor &out) {
  out = like(x.shape);
  int64_t n = x.numel(), cols = fakeQuantCols(x, granularity);
  numerics::QuantGrid grid =
      fakeQuantGrid(bits, symmetric, granularity, groupSize, clip);
  const float *in = x.data->data();
  float *o = out.data->data();
  forRows(n / cols, cols, [&](int64_t r0, int64_t r1) {
    numerics::fakeQuantRows(in + r0 * cols, r1 - r0, cols, grid, o + r0 * cols);
  });
}

void fakeQuantBackward(const Tensor &x, unsigned bits, bool symmetric,
                       int granularity, int64_t groupSize, double clip,
                       const Tensor &dy, Tensor &dx, double &dclip) {
  dx = like(x.shape);
  int64_t n = x.numel(), cols = fakeQuantCols(x, granularity), rows = n / cols;
  numerics::QuantGrid grid =
      fakeQuantGrid(bits, symmetric, granularity, groupSize, clip);
  std::vector<double> perRow(rows);
  const float *in = x.data->data(), *g = dy.data->data();
  float *o = dx.data->data();
  forRows(rows, cols, [&](int64_t r0, int64_t r1) {
    numerics::fakeQuantRowsBackward(in + r0 * cols, r1 - r0, cols, grid,
                                    nullptr, g + r0 * cols, o + r0 * cols,
                                    perRow.data() + r0);
  });
  dclip = 0;
  for (double v : perRow)
    dclip += v;
}

} // namespace exec
} // namespace sq
