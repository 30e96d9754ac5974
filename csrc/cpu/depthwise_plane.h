// Depthwise convolution of one plane, its transpose and its weight gradient, on padded planes.
//
// A padded plane holds an H x W plane inside a border of P zeros, its columns split by their index
// modulo the stride s into s phases ("column phases": phase p holds padded columns p, p+s, ...), so
// that every tap of a strided convolution reads, and its transpose writes, consecutive elements:
// output column ow of tap column offset q lies at column ow + q/s of phase q%s. Every loop below
// runs over an output row with unit stride (the compiler vectorises it).
#pragma once

#include <algorithm>
#include <cstdint>

#include "scratch.h"
#include "small_gemm.h"

#ifndef HDAS_CPU_ISA
#define HDAS_CPU_ISA isa_base
#endif

namespace hdas::cpu::HDAS_CPU_ISA {

struct PaddedPlane {
  int64_t H, W, P, s, Hp, Wq;
  PaddedPlane(int64_t H_, int64_t W_, int64_t P_, int64_t s_)
      : H(H_), W(W_), P(P_), s(s_), Hp(H_ + 2 * P_), Wq((W_ + 2 * P_ + s_ - 1) / s_) {}
  int64_t size() const { return s * Hp * Wq; }
  // Offset of padded column j of padded row i.
  int64_t at(int64_t i, int64_t j) const { return (j % s) * Hp * Wq + i * Wq + j / s; }
};

// One depthwise tap geometry: kernel k, dilation d, padding pad, stride s (of the padded plane).
struct Taps {
  int64_t k, d, pad;
};

// dst's interior = f(src[h*W + w]) for the H x W plane src; the border is left as it is (zero).
template <typename S, typename A, typename F>
void fill_interior(const PaddedPlane& g, const S* __restrict src, A* __restrict dst, F f) {
  for (int64_t h = 0; h < g.H; ++h) {
    const S* row = src + h * g.W;
    if (g.s == 1) {
      A* d = dst + (h + g.P) * g.Wq + g.P;
      for (int64_t w = 0; w < g.W; ++w) d[w] = f(row[w]);
      continue;
    }
    for (int64_t p = 0; p < g.s; ++p) {
      // columns w with (w + P) % s == p: w = w0, w0 + s, ...
      const int64_t w0 = ((p - g.P) % g.s + g.s) % g.s;
      A* d = dst + g.at(h + g.P, w0 + g.P);
      for (int64_t w = w0, i = 0; w < g.W; w += g.s, ++i) d[i] = f(row[w]);
    }
  }
}

// out[h*W + w] = f(src's interior at (h, w), h*W + w).
template <typename A, typename D, typename F>
void read_interior(const PaddedPlane& g, const A* __restrict src, D* __restrict out, F f) {
  for (int64_t h = 0; h < g.H; ++h) {
    D* row = out + h * g.W;
    if (g.s == 1) {
      const A* s = src + (h + g.P) * g.Wq + g.P;
      for (int64_t w = 0; w < g.W; ++w) row[w] = f(s[w], h * g.W + w);
      continue;
    }
    for (int64_t p = 0; p < g.s; ++p) {
      const int64_t w0 = ((p - g.P) % g.s + g.s) % g.s;
      const A* s = src + g.at(h + g.P, w0 + g.P);
      for (int64_t w = w0, i = 0; w < g.W; w += g.s, ++i) row[w] = f(s[i], h * g.W + w);
    }
  }
}

// The first element of tap (ky, kx)'s input row for output row oh: output column ow reads it at + ow.
inline int64_t tap_start(const PaddedPlane& g, const Taps& t, int64_t oh, int64_t ky, int64_t kx) {
  const int64_t q = kx * t.d - t.pad + g.P;
  return g.at(oh * g.s + ky * t.d - t.pad + g.P, q);
}

// Every tap's tap_start for output row 0; row oh adds oh * row_step(g). Computed once per plane
// rather than per row and tap: PaddedPlane::at divides by the stride.
constexpr int64_t kMaxTaps = 49;  // 7 x 7, the largest kernel (conv_candidates_codes.h)

struct TapOffsets {
  int64_t n, at[kMaxTaps];
  TapOffsets(const PaddedPlane& g, const Taps& t) : n(t.k * t.k) {
    for (int64_t ky = 0; ky < t.k; ++ky)
      for (int64_t kx = 0; kx < t.k; ++kx) at[ky * t.k + kx] = tap_start(g, t, 0, ky, kx);
  }
};

inline int64_t row_step(const PaddedPlane& g) { return g.s * g.Wq; }

// The scratch slot of dw_transpose_add's padded copy of dout (the kernels' own slots are below 20).
constexpr int kTransposeSlot = 20;

// kV vectors of outputs from o on: o (kAdd) or 0 plus the sum over taps of w[tap] * row[at[tap]],
// summed in registers in tap order and stored once.
template <int kV, bool kAdd, typename A>
inline void taps_block(const int64_t* at, int64_t taps, const A* __restrict row, const A* __restrict w,
                       A* __restrict o) {
  using V = typename Vec<A>::type;
  constexpr int64_t n = Vec<A>::n;
  V acc[kV];
  for (int v = 0; v < kV; ++v) acc[v] = kAdd ? vload<V>(o + v * n) : V{};
  for (int64_t i = 0; i < taps; ++i) {
    const A wv = w[i];
    const A* __restrict r = row + at[i];
    for (int v = 0; v < kV; ++v) acc[v] += wv * vload<V>(r + v * n);
  }
  for (int v = 0; v < kV; ++v) vstore(o + v * n, acc[v]);
}

// One output row of `width` elements: o[j] (kAdd) or 0 plus sum over taps of w[tap] * row[at[tap] + j].
template <bool kAdd, typename A>
void taps_row(const int64_t* at, int64_t taps, const A* __restrict row, const A* __restrict w, int64_t width,
              A* __restrict o) {
  constexpr int64_t n = Vec<A>::n;
  int64_t j = 0;
  for (; j + 4 * n <= width; j += 4 * n) taps_block<4, kAdd>(at, taps, row + j, w, o + j);
  for (; j + n <= width; j += n) taps_block<1, kAdd>(at, taps, row + j, w, o + j);
  for (; j < width; ++j) {
    A acc = kAdd ? o[j] : A(0);
    for (int64_t i = 0; i < taps; ++i) acc += w[i] * row[at[i] + j];
    o[j] = acc;
  }
}

// out[Ho*Wo] = sum over taps of w[tap] * the plane under it (cross-correlation, as conv2d).
template <typename A>
void dw_forward(const PaddedPlane& g, const Taps& t, const A* __restrict src, const A* __restrict w, int64_t Ho,
                int64_t Wo, A* __restrict out) {
  const TapOffsets off(g, t);
  for (int64_t oh = 0; oh < Ho; ++oh) taps_row<false>(off.at, off.n, src + oh * row_step(g), w, Wo, out + oh * Wo);
}

// dsrc += the transpose of dw_forward applied to dout[Ho*Wo] (dsrc a padded plane). At stride 1
// the transpose is itself a correlation, of dout zero-padded by P with the flipped kernel: each
// interior element gathers its taps in registers (the border is not written). At stride 2 each
// tap's products are scattered row by row; the border then collects what falls on the padding,
// which callers ignore.
template <typename A>
void dw_transpose_add(const PaddedPlane& g, const Taps& t, const A* __restrict dout, const A* __restrict w,
                      int64_t Ho, int64_t Wo, A* __restrict dsrc) {
  if (g.s == 1) {
    const int64_t P = g.P, Wd = Wo + 2 * P, size = (Ho + 2 * P) * Wd;
    A* dp = scratch<A, kTransposeSlot>(size);
    std::fill(dp, dp + size, A(0));
    for (int64_t oh = 0; oh < Ho; ++oh) std::copy(dout + oh * Wo, dout + (oh + 1) * Wo, dp + (oh + P) * Wd + P);
    TapOffsets flip(g, t);
    for (int64_t ky = 0; ky < t.k; ++ky)
      for (int64_t kx = 0; kx < t.k; ++kx)
        flip.at[ky * t.k + kx] = (t.pad - ky * t.d + P) * Wd + (t.pad - kx * t.d + P);
    for (int64_t ih = 0; ih < g.H; ++ih)
      taps_row<true>(flip.at, flip.n, dp + ih * Wd, w, g.W, dsrc + (ih + P) * g.Wq + P);
    return;
  }
  const TapOffsets off(g, t);
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const A* __restrict d = dout + oh * Wo;
    A* row = dsrc + oh * row_step(g);
    for (int64_t i = 0; i < off.n; ++i) {
      const A wv = w[i];
      A* __restrict r = row + off.at[i];
      for (int64_t ow = 0; ow < Wo; ++ow) r[ow] += wv * d[ow];
    }
  }
}

// gw[tap] += sum over outputs of dout * the plane under the tap: the weight gradient, each tap's
// products summed in four vector accumulators over the whole plane.
template <typename A>
void dw_weight_grad_add(const PaddedPlane& g, const Taps& t, const A* __restrict dout, const A* __restrict src,
                        int64_t Ho, int64_t Wo, A* __restrict gw) {
  using V = typename Vec<A>::type;
  constexpr int64_t n = Vec<A>::n;
  const TapOffsets off(g, t);
  for (int64_t i = 0; i < off.n; ++i) {
    V acc[4] = {};
    A tail = 0;
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const A* __restrict d = dout + oh * Wo;
      const A* __restrict r = src + oh * row_step(g) + off.at[i];
      int64_t ow = 0;
      for (int v = 0; ow + n <= Wo; ow += n, v = (v + 1) & 3) acc[v] += vload<V>(d + ow) * vload<V>(r + ow);
      for (; ow < Wo; ++ow) tail += d[ow] * r[ow];
    }
    gw[i] += hsum<V, A>((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
  }
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
