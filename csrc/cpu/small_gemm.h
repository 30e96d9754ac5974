// The pointwise convolutions of one image as small row-major GEMMs: C x C weights against a
// [C, L] plane set (C up to a few hundred, L = H*W). Register-blocked with GCC vector types of 32
// bytes (8 floats or 4 doubles: one AVX2 register in the AVX2 build, two SSE registers in the
// baseline one). No BLAS: libtorch does not export a raw-pointer GEMM, and these shapes (a short
// reduction dimension) are where a BLAS call's overhead weighs most.
#pragma once

#include <cstdint>
#include <cstring>

#include "plane_math.h"

#ifndef HDAS_CPU_ISA
#define HDAS_CPU_ISA isa_base
#endif

// The baseline build passes these 32-byte vectors in two SSE registers; every function taking or
// returning one is inlined, so the ABI note GCC gives about it does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace hdas::cpu::HDAS_CPU_ISA {

template <typename A>
struct Vec {
  typedef A type __attribute__((vector_size(32)));
  static constexpr int64_t n = 32 / sizeof(A);
};

template <typename V, typename A>
inline V vload(const A* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V, typename A>
inline void vstore(A* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename V, typename A>
inline A hsum(const V& v) {
  A s = 0;
  for (int i = 0; i < static_cast<int>(sizeof(V) / sizeof(A)); ++i) s += v[i];
  return s;
}

// Z[m, l] = sum_k W[m*ws + k*wk] * X[k*L + l] for m < M, l < L: W given by strides, so that the
// same kernel multiplies by W (ws = K, wk = 1) and by its transpose (ws = 1, wk = M_of_W).
template <typename A>
void gemm_wx(int64_t M, int64_t K, int64_t L, const A* W, int64_t ws, int64_t wk, const A* X, A* Z) {
  using V = typename Vec<A>::type;
  constexpr int64_t n = Vec<A>::n, LR = 2 * n;
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    const A* w0 = W + m * ws;
    int64_t l = 0;
    for (; l + LR <= L; l += LR) {
      V a00{}, a01{}, a10{}, a11{}, a20{}, a21{}, a30{}, a31{};
      for (int64_t k = 0; k < K; ++k) {
        const A* x = X + k * L + l;
        const V x0 = vload<V>(x), x1 = vload<V>(x + n);
        const A* w = w0 + k * wk;
        const A b0 = w[0], b1 = w[ws], b2 = w[2 * ws], b3 = w[3 * ws];
        a00 += b0 * x0; a01 += b0 * x1;
        a10 += b1 * x0; a11 += b1 * x1;
        a20 += b2 * x0; a21 += b2 * x1;
        a30 += b3 * x0; a31 += b3 * x1;
      }
      A* z = Z + m * L + l;
      vstore(z, a00); vstore(z + n, a01);
      vstore(z + L, a10); vstore(z + L + n, a11);
      vstore(z + 2 * L, a20); vstore(z + 2 * L + n, a21);
      vstore(z + 3 * L, a30); vstore(z + 3 * L + n, a31);
    }
    for (; l < L; ++l)
      for (int64_t r = 0; r < 4; ++r) {
        A s = 0;
        for (int64_t k = 0; k < K; ++k) s += w0[r * ws + k * wk] * X[k * L + l];
        Z[(m + r) * L + l] = s;
      }
  }
  for (; m < M; ++m) {
    A* z = Z + m * L;
    for (int64_t l = 0; l < L; ++l) z[l] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const A b = W[m * ws + k * wk];
      const A* __restrict x = X + k * L;
      for (int64_t l = 0; l < L; ++l) z[l] += b * x[l];
    }
  }
}

// Z[M, L] = W[M, K] @ X[K, L]
template <typename A>
void mm(int64_t M, int64_t K, int64_t L, const A* W, const A* X, A* Z) {
  gemm_wx(M, K, L, W, K, 1, X, Z);
}

// Z[K, L] = W[M, K]^T @ X[M, L]
template <typename A>
void mm_t(int64_t M, int64_t K, int64_t L, const A* W, const A* X, A* Z) {
  gemm_wx(K, M, L, W, 1, K, X, Z);
}

// G[m, k] = sum_l X[m, l] * Y[k, l]: G[M, K] = X[M, L] @ Y[K, L]^T.
template <typename A>
void mm_nt(int64_t M, int64_t K, int64_t L, const A* X, const A* Y, A* G) {
  using V = typename Vec<A>::type;
  constexpr int64_t n = Vec<A>::n;
  const int64_t Lv = L - L % n;
  auto tail = [&](const A* x, const A* y) {
    A s = 0;
    for (int64_t l = Lv; l < L; ++l) s += x[l] * y[l];
    return s;
  };
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    int64_t k = 0;
    for (; k + 2 <= K; k += 2) {
      V a00{}, a01{}, a10{}, a11{}, a20{}, a21{}, a30{}, a31{};
      const A *x0 = X + m * L, *x1 = x0 + L, *x2 = x1 + L, *x3 = x2 + L, *y0 = Y + k * L, *y1 = y0 + L;
      for (int64_t l = 0; l < Lv; l += n) {
        const V u0 = vload<V>(y0 + l), u1 = vload<V>(y1 + l);
        V v = vload<V>(x0 + l);
        a00 += v * u0; a01 += v * u1;
        v = vload<V>(x1 + l);
        a10 += v * u0; a11 += v * u1;
        v = vload<V>(x2 + l);
        a20 += v * u0; a21 += v * u1;
        v = vload<V>(x3 + l);
        a30 += v * u0; a31 += v * u1;
      }
      A* g = G + m * K + k;
      g[0] = hsum<V, A>(a00) + tail(x0, y0); g[1] = hsum<V, A>(a01) + tail(x0, y1);
      g[K] = hsum<V, A>(a10) + tail(x1, y0); g[K + 1] = hsum<V, A>(a11) + tail(x1, y1);
      g[2 * K] = hsum<V, A>(a20) + tail(x2, y0); g[2 * K + 1] = hsum<V, A>(a21) + tail(x2, y1);
      g[3 * K] = hsum<V, A>(a30) + tail(x3, y0); g[3 * K + 1] = hsum<V, A>(a31) + tail(x3, y1);
    }
    for (; k < K; ++k)
      for (int64_t r = 0; r < 4; ++r) G[(m + r) * K + k] = dot(L, X + (m + r) * L, Y + k * L);
  }
  for (; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) G[m * K + k] = dot(L, X + m * L, Y + k * L);
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
