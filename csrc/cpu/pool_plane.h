// 3x3 pooling (padding 1, stride 1 or 2) of one contiguous H x W plane, its argmax and its
// transpose. The CPU kernels work plane by plane so that every plane stays in cache; every pass
// here is separable (a row pass, then a column pass) with branch-free interiors that vectorise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#ifndef HDAS_CPU_ISA
#define HDAS_CPU_ISA isa_base
#endif

// Per instruction set (see mixed_node_kernel.h): each kernel build gets its own symbols.
namespace hdas::cpu::HDAS_CPU_ISA {

// PyTorch's max_pool2d rule: strictly greater wins, and a NaN always wins (so the last NaN does).
template <typename A>
inline bool takes_over(A v, A m) { return v > m || v != v; }

// Window [lo, hi] of output index o along an axis of length n: o*s-1 .. o*s+1, clipped.
inline int64_t win_lo(int64_t o, int64_t s) { return std::max<int64_t>(o * s - 1, 0); }
inline int64_t win_hi(int64_t o, int64_t s, int64_t n) { return std::min<int64_t>(o * s + 1, n - 1); }

// 1 / (number of in-plane elements) of every output window: avg_pool2d without padding in the count.
template <typename A>
std::vector<A> inverse_counts(int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo) {
  std::vector<A> inv(Ho * Wo);
  for (int64_t oh = 0; oh < Ho; ++oh)
    for (int64_t ow = 0; ow < Wo; ++ow)
      inv[oh * Wo + ow] = A(1) / static_cast<A>((win_hi(oh, s, H) - win_lo(oh, s) + 1) * (win_hi(ow, s, W) - win_lo(ow, s) + 1));
  return inv;
}

// out[Ho*Wo] = max or sum over each 3x3 window, with tmp[H*Wo] scratch. kAccumulate: out += instead.
template <bool kMax, typename T, typename A, bool kAccumulate = false>
void window_reduce(const T* x, int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo, A* tmp, A* out) {
  auto f = [](A m, A v) { return kMax ? (takes_over(v, m) ? v : m) : m + v; };
  auto put = [](A& o, A v) {
    if constexpr (kAccumulate) o += v;
    else o = v;
  };
  if (s == 1 && H >= 2 && W >= 2) {
    // Stride 1: each pass is one loop over the whole plane (rows of 32 are too short to vectorise
    // well one by one), then the clipped windows at the row (column) ends are redone. Same
    // operands in the same order as the row-by-row code below: bit-identical results.
    const int64_t n = H * W;
    for (int64_t i = 1; i < n - 1; ++i) tmp[i] = f(f(static_cast<A>(x[i - 1]), static_cast<A>(x[i])), static_cast<A>(x[i + 1]));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t a = h * W, b = a + W - 1;
      tmp[a] = f(static_cast<A>(x[a]), static_cast<A>(x[a + 1]));
      tmp[b] = f(static_cast<A>(x[b - 1]), static_cast<A>(x[b]));
    }
    for (int64_t i = 0; i < W; ++i) put(out[i], f(tmp[i], tmp[i + W]));
    for (int64_t i = W; i < n - W; ++i) put(out[i], f(f(tmp[i - W], tmp[i]), tmp[i + W]));
    for (int64_t i = n - W; i < n; ++i) put(out[i], f(tmp[i - W], tmp[i]));
    return;
  }
  // Outputs 1 .. wi_end-1 have their whole window inside the row.
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
    if (s == 1) {
      for (int64_t ow = 1; ow < wi_end; ++ow)
        t[ow] = f(f(static_cast<A>(r[ow - 1]), static_cast<A>(r[ow])), static_cast<A>(r[ow + 1]));
    } else {
      for (int64_t ow = 1; ow < wi_end; ++ow)
        t[ow] = f(f(static_cast<A>(r[2 * ow - 1]), static_cast<A>(r[2 * ow])), static_cast<A>(r[2 * ow + 1]));
    }
    for (int64_t ow = std::max<int64_t>(wi_end, 1); ow < Wo; ++ow) edge(ow);
  }
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const int64_t lo = win_lo(oh, s), hi = win_hi(oh, s, H);
    A* o = out + oh * Wo;
    if constexpr (kAccumulate) {  // out holds other terms: reduce each window before adding it
      for (int64_t ow = 0; ow < Wo; ++ow) {
        A v = tmp[lo * Wo + ow];
        for (int64_t h = lo + 1; h <= hi; ++h) v = f(v, tmp[h * Wo + ow]);
        put(o[ow], v);
      }
      continue;
    }
    std::copy(tmp + lo * Wo, tmp + (lo + 1) * Wo, o);
    for (int64_t h = lo + 1; h <= hi; ++h) {
      const A* t = tmp + h * Wo;
      for (int64_t ow = 0; ow < Wo; ++ow) o[ow] = f(o[ow], t[ow]);
    }
  }
}

// pool_q(x) for one plane: max, or sum times the inverse window counts.
template <bool kMax, typename T, typename A>
void pool_plane(const T* x, int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo, const A* inv_cnt, A* tmp, A* out) {
  window_reduce<kMax>(x, H, W, s, Ho, Wo, tmp, out);
  if (!kMax)
    for (int64_t i = 0; i < Ho * Wo; ++i) out[i] *= inv_cnt[i];
}

// max_pool2d's argmax of one plane, as the two choices of a separable scan: ti[H*Wo] holds, for
// each row window, the element (h*W + w) of its leftmost maximum; ci[Ho*Wo] holds, for each
// output, the row-pass entry (h*Wo + ow) of the topmost of those. ti[ci[o]] is the element
// max_pool2d picks: the first maximum in row-major window order (the last NaN). Keeping both
// choices lets the backward route the gradient back pass by pass (argmax_transpose_add).
template <typename T, typename A>
void argmax_plane(const T* x, int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo, A* tv, int32_t* ti,
                  A* mv, int32_t* ci) {
  // One candidate (value m, index b) challenged by element i: the scan step of max_pool2d.
  auto step = [](A& m, int32_t& b, A v, int32_t i) {
    const bool take = takes_over(v, m);
    m = take ? v : m;
    b = take ? i : b;
  };
  if (s == 1 && H >= 2 && W >= 2) {
    // As in window_reduce: whole-plane passes, then the row (column) ends redone; candidates are
    // challenged in the same order as below, so the same element wins.
    const int64_t n = H * W;
    for (int64_t i = 1; i < n - 1; ++i) {
      A m = static_cast<A>(x[i - 1]);
      int32_t b = static_cast<int32_t>(i - 1);
      step(m, b, static_cast<A>(x[i]), static_cast<int32_t>(i));
      step(m, b, static_cast<A>(x[i + 1]), static_cast<int32_t>(i + 1));
      tv[i] = m;
      ti[i] = b;
    }
    // Output o at a row end has the window {a, a+1}: a = o at the start, o-1 at the end.
    auto row_end = [&](int64_t o, int64_t a) {
      A m = static_cast<A>(x[a]);
      int32_t b = static_cast<int32_t>(a);
      step(m, b, static_cast<A>(x[a + 1]), static_cast<int32_t>(a + 1));
      tv[o] = m;
      ti[o] = b;
    };
    for (int64_t h = 0; h < H; ++h) {
      row_end(h * W, h * W);
      row_end(h * W + W - 1, h * W + W - 2);
    }
    auto column = [&](int64_t i, int64_t lo, int64_t hi) {
      A m = tv[lo];
      int32_t b = static_cast<int32_t>(lo);
      for (int64_t j = lo + W; j <= hi; j += W) step(m, b, tv[j], static_cast<int32_t>(j));
      mv[i] = m;
      ci[i] = b;
    };
    for (int64_t i = 0; i < W; ++i) column(i, i, i + W);
    for (int64_t i = W; i < n - W; ++i) {
      A m = tv[i - W];
      int32_t b = static_cast<int32_t>(i - W);
      step(m, b, tv[i], static_cast<int32_t>(i));
      step(m, b, tv[i + W], static_cast<int32_t>(i + W));
      mv[i] = m;
      ci[i] = b;
    }
    for (int64_t i = n - W; i < n; ++i) column(i, i - W, i);
    return;
  }
  const int64_t wi_end = W >= 2 ? std::min<int64_t>((W - 2) / s + 1, Wo) : 1;
  for (int64_t h = 0; h < H; ++h) {
    const T* __restrict r = x + h * W;
    A* __restrict t = tv + h * Wo;
    int32_t* __restrict ix = ti + h * Wo;
    const int32_t row = static_cast<int32_t>(h * W);
    auto edge = [&](int64_t ow) {
      const int64_t lo = win_lo(ow, s), hi = win_hi(ow, s, W);
      A m = static_cast<A>(r[lo]);
      int32_t b = static_cast<int32_t>(lo);
      for (int64_t i = lo + 1; i <= hi; ++i) step(m, b, static_cast<A>(r[i]), static_cast<int32_t>(i));
      t[ow] = m;
      ix[ow] = row + b;
    };
    edge(0);
    // Interior: the window is c-1, c, c+1 with c = ow*s (stride 1 gets its own loop so that the
    // loads are contiguous and the loop vectorises).
    auto interior = [&](int64_t ow, int64_t c) {
      A m = static_cast<A>(r[c - 1]);
      int32_t b = static_cast<int32_t>(c - 1);
      step(m, b, static_cast<A>(r[c]), static_cast<int32_t>(c));
      step(m, b, static_cast<A>(r[c + 1]), static_cast<int32_t>(c + 1));
      t[ow] = m;
      ix[ow] = row + b;
    };
    if (s == 1) {
      for (int64_t ow = 1; ow < wi_end; ++ow) interior(ow, ow);
    } else {
      for (int64_t ow = 1; ow < wi_end; ++ow) interior(ow, 2 * ow);
    }
    for (int64_t ow = std::max<int64_t>(wi_end, 1); ow < Wo; ++ow) edge(ow);
  }
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const int64_t lo = win_lo(oh, s), hi = win_hi(oh, s, H);
    A* __restrict m = mv + oh * Wo;
    int32_t* __restrict b = ci + oh * Wo;
    std::copy(tv + lo * Wo, tv + (lo + 1) * Wo, m);
    for (int64_t ow = 0; ow < Wo; ++ow) b[ow] = static_cast<int32_t>(lo * Wo + ow);
    for (int64_t h = lo + 1; h <= hi; ++h) {
      const A* __restrict t = tv + h * Wo;
      for (int64_t ow = 0; ow < Wo; ++ow) step(m[ow], b[ow], t[ow], static_cast<int32_t>(h * Wo + ow));
    }
  }
}

// gx[H*W] += the max-pool gradient d[Ho*Wo] sent to the elements argmax_plane chose. At stride 1
// on planes of 2x2 and up: the transpose of its column pass (into t[H*Wo]), then of its row pass,
// each entry gathering the (at most three) entries whose window holds it and that chose it: a
// branch-free loop where a scatter in output order would wait on its previous store whenever
// neighbouring windows share their maximum, as they mostly do.
template <typename A>
void argmax_transpose_add(const A* d, const int32_t* ci, const int32_t* ti, int64_t H, int64_t W, int64_t s,
                          int64_t Ho, int64_t Wo, A* t, A* gx) {
  auto pick = [](int32_t choice, int64_t j, A v) { return choice == static_cast<int32_t>(j) ? v : A(0); };
  if (s == 1 && H >= 2 && W >= 2) {
    const int64_t n = H * W;
    for (int64_t j = 0; j < W; ++j) t[j] = pick(ci[j], j, d[j]) + pick(ci[j + W], j, d[j + W]);
    for (int64_t j = W; j < n - W; ++j)
      t[j] = pick(ci[j - W], j, d[j - W]) + pick(ci[j], j, d[j]) + pick(ci[j + W], j, d[j + W]);
    for (int64_t j = n - W; j < n; ++j) t[j] = pick(ci[j - W], j, d[j - W]) + pick(ci[j], j, d[j]);
    // A row's first (last) window never picks from the previous (next) row, so one loop over the
    // whole plane is exact; only the plane's first and last elements lack a neighbour.
    gx[0] += pick(ti[0], 0, t[0]) + pick(ti[1], 0, t[1]);
    for (int64_t k = 1; k < n - 1; ++k)
      gx[k] += pick(ti[k - 1], k, t[k - 1]) + pick(ti[k], k, t[k]) + pick(ti[k + 1], k, t[k + 1]);
    gx[n - 1] += pick(ti[n - 2], n - 1, t[n - 2]) + pick(ti[n - 1], n - 1, t[n - 1]);
    return;
  }
  // Stride 2 (windows overlap by one element) and thin planes: scattered, outputs 3 apart first
  // so that consecutive stores rarely hit the same element.
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t o = r; o < Ho * Wo; o += 3) gx[ti[ci[o]]] += d[o];
}

// gx[H*W] += transpose of sum-pooling applied to d[Ho*Wo] (each output adds d to its window).
// Stride 1: the 3x3 box sum is its own transpose. Stride 2: gathered, rows then columns (row h
// sums the output rows whose window holds it: h/2 when even, (h-1)/2 and (h+1)/2 when odd).
template <typename A>
void window_sum_transpose_add(const A* d, int64_t H, int64_t W, int64_t s, int64_t Ho, int64_t Wo, A* tmp, A* gx) {
  if (s == 1) {
    window_reduce<false, A, A, /*kAccumulate=*/true>(d, H, W, 1, H, W, tmp, gx);
    return;
  }
  for (int64_t h = 0; h < H; ++h) {
    A* t = tmp + h * Wo;
    const A* a = d + (h / 2) * Wo;
    if (h % 2 == 1 && (h + 1) / 2 < Ho) {
      const A* b = a + Wo;
      for (int64_t ow = 0; ow < Wo; ++ow) t[ow] = a[ow] + b[ow];
    } else {
      std::copy(a, a + Wo, t);
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    const A* t = tmp + h * Wo;
    A* g = gx + h * W;
    for (int64_t w = 0; w < W; w += 2) g[w] += t[w / 2];
    for (int64_t w = 1; w < W; w += 2) g[w] += (w + 1) / 2 < Wo ? t[(w - 1) / 2] + t[(w + 1) / 2] : t[(w - 1) / 2];
  }
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
