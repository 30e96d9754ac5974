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

// out[Ho*Wo] = sum over taps of w[tap] * the plane under it (cross-correlation, as conv2d).
template <typename A>
void dw_forward(const PaddedPlane& g, const Taps& t, const A* __restrict src, const A* __restrict w, int64_t Ho,
                int64_t Wo, A* __restrict out) {
  for (int64_t oh = 0; oh < Ho; ++oh) {
    A* __restrict o = out + oh * Wo;
    std::fill(o, o + Wo, A(0));
    for (int64_t ky = 0; ky < t.k; ++ky)
      for (int64_t kx = 0; kx < t.k; ++kx) {
        const A wv = w[ky * t.k + kx];
        const A* __restrict r = src + tap_start(g, t, oh, ky, kx);
        for (int64_t ow = 0; ow < Wo; ++ow) o[ow] += wv * r[ow];
      }
  }
}

// dsrc += the transpose of dw_forward applied to dout[Ho*Wo] (dsrc a padded plane: its border
// collects what falls on the padding, which callers ignore).
template <typename A>
void dw_transpose_add(const PaddedPlane& g, const Taps& t, const A* __restrict dout, const A* __restrict w,
                      int64_t Ho, int64_t Wo, A* __restrict dsrc) {
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const A* __restrict d = dout + oh * Wo;
    for (int64_t ky = 0; ky < t.k; ++ky)
      for (int64_t kx = 0; kx < t.k; ++kx) {
        const A wv = w[ky * t.k + kx];
        A* __restrict r = dsrc + tap_start(g, t, oh, ky, kx);
        for (int64_t ow = 0; ow < Wo; ++ow) r[ow] += wv * d[ow];
      }
  }
}

// gw[tap] += sum over outputs of dout * the plane under the tap: the weight gradient.
template <typename A>
void dw_weight_grad_add(const PaddedPlane& g, const Taps& t, const A* __restrict dout, const A* __restrict src,
                        int64_t Ho, int64_t Wo, A* __restrict gw) {
  for (int64_t ky = 0; ky < t.k; ++ky)
    for (int64_t kx = 0; kx < t.k; ++kx) {
      A total = 0;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const A* __restrict d = dout + oh * Wo;
        const A* __restrict r = src + tap_start(g, t, oh, ky, kx);
        total += dot(Wo, d, r);
      }
      gw[ky * t.k + kx] += total;
    }
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
