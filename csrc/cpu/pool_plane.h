// 3x3 pooling (padding 1, stride 1 or 2) of one contiguous H x W plane, and its transpose.
// Used by the CPU kernels, which work plane by plane so that every plane stays in cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace hdas::cpu {

// PyTorch's max_pool2d rule: a NaN anywhere in the window wins.
template <typename A>
inline A max_nan(A m, A v) { return (v > m || v != v) ? v : m; }

// Window [lo, hi] of output index o along an axis of length n: rows/cols o*s-1 .. o*s+1, clipped.
inline int64_t win_lo(int64_t o, int64_t s) { return std::max<int64_t>(o * s - 1, 0); }
inline int64_t win_hi(int64_t o, int64_t s, int64_t n) { return std::min<int64_t>(o * s + 1, n - 1); }

// out[Ho*Wo] = pool(x) with tmp[H*Wo] scratch; separable: a row pass then a column pass.
template <bool kMax, typename T, typename A>
void pool_plane(const T* x, int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo, A* tmp, A* out) {
  auto f = [](A a, A b) { return kMax ? max_nan(a, b) : a + b; };
  // Interior outputs have their whole window inside the plane: branch-free loops that vectorise.
  const int64_t wi_end = W >= 2 ? std::min<int64_t>((W - 2) / s + 1, Wo) : 1;
  for (int64_t h = 0; h < H; ++h) {
    const T* r = x + h * W;
    A* t = tmp + h * Wo;
    auto edge = [&](int64_t ow) {
      const int64_t lo = win_lo(ow, s), hi = win_hi(ow, s, W);
      A v = static_cast<A>(r[lo]);
      for (int64_t i = lo + 1; i <= hi; ++i) v = f(v, static_cast<A>(r[i]));
      t[ow] = v;
    };
    edge(0);
    for (int64_t ow = 1; ow < wi_end; ++ow) {
      const int64_t c = ow * s;
      t[ow] = f(f(static_cast<A>(r[c - 1]), static_cast<A>(r[c])), static_cast<A>(r[c + 1]));
    }
    for (int64_t ow = std::max<int64_t>(wi_end, 1); ow < Wo; ++ow) edge(ow);
  }
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const int64_t lo = win_lo(oh, s), hi = win_hi(oh, s, H);
    A* o = out + oh * Wo;
    const A* t0 = tmp + lo * Wo;
    for (int64_t ow = 0; ow < Wo; ++ow) o[ow] = t0[ow];
    for (int64_t h = lo + 1; h <= hi; ++h) {
      const A* t = tmp + h * Wo;
      for (int64_t ow = 0; ow < Wo; ++ow) o[ow] = f(o[ow], t[ow]);
    }
    if (!kMax) {
      const A rows = static_cast<A>(hi - lo + 1);
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const A cols = static_cast<A>(win_hi(ow, s, W) - win_lo(ow, s) + 1);
        o[ow] /= rows * cols;
      }
    }
  }
}

// Index (h*W + w) of the element max_pool2d picks for output (oh, ow): the first maximum in
// row-major window order, or the last NaN, exactly as PyTorch's kernels scan.
template <typename A, typename T>
inline int64_t argmax_window(const T* x, int64_t H, int64_t W, int64_t s, int64_t oh, int64_t ow) {
  const int64_t h0 = win_lo(oh, s), h1 = win_hi(oh, s, H);
  const int64_t w0 = win_lo(ow, s), w1 = win_hi(ow, s, W);
  int64_t best = h0 * W + w0;
  A m = -std::numeric_limits<A>::infinity();
  for (int64_t h = h0; h <= h1; ++h)
    for (int64_t w = w0; w <= w1; ++w) {
      const A v = static_cast<A>(x[h * W + w]);
      if (v > m || v != v) { m = v; best = h * W + w; }
    }
  return best;
}

// gx[H*W] += transpose of avg-pool applied to dp[Ho*Wo] (each output spreads dp / count over its
// window), with tmp[H*Wo] scratch.
template <typename A>
void avg_pool_transpose_add(const A* dp, int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo,
                            A* tmp, A* gx) {
  std::fill(tmp, tmp + H * Wo, A(0));
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const int64_t lo = win_lo(oh, s), hi = win_hi(oh, s, H);
    const A rows = static_cast<A>(hi - lo + 1);
    for (int64_t h = lo; h <= hi; ++h) {
      A* t = tmp + h * Wo;
      const A* d = dp + oh * Wo;
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const A cols = static_cast<A>(win_hi(ow, s, W) - win_lo(ow, s) + 1);
        t[ow] += d[ow] / (rows * cols);
      }
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    const A* t = tmp + h * Wo;
    A* g = gx + h * W;
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const int64_t lo = win_lo(ow, s), hi = win_hi(ow, s, W);
      for (int64_t w = lo; w <= hi; ++w) g[w] += t[ow];
    }
  }
}

}  // namespace hdas::cpu
