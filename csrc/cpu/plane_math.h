// Elementwise and reduction loops over one plane, written so the compiler vectorises them:
// restrict-qualified pointers, bounds by value, and reductions split over independent lanes
// (without -ffast-math a single running sum cannot be vectorised).
#pragma once

#include <cstdint>

#ifndef HDAS_CPU_ISA
#define HDAS_CPU_ISA isa_base
#endif

// Per instruction set (see mixed_node_kernel.h): each kernel build gets its own symbols.
namespace hdas::cpu::HDAS_CPU_ISA {

constexpr int kLanes = 16;

// acc[i] += a * x[i]
template <typename T, typename A>
inline void axpy(int64_t n, A a, const T* __restrict x, A* __restrict acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a * static_cast<A>(x[i]);
}

// acc[i] += a * (y[i] - m)
template <typename A>
inline void axmy(int64_t n, A a, const A* __restrict y, A m, A* __restrict acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a * (y[i] - m);
}

// out[i] = x[i], converting
template <typename S, typename D>
inline void convert(int64_t n, const S* __restrict x, D* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<D>(x[i]);
}

// sum_i f(i), accumulated over kLanes independent partial sums.
template <typename A, typename F>
inline A lane_sum(int64_t n, F f) {
  A part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += f(i + l);
  A s = 0;
  for (; i < n; ++i) s += f(i);
  for (int l = 0; l < kLanes; ++l) s += part[l];
  return s;
}

// BatchNorm statistics and the backward's sums over a batch accumulate in double, as PyTorch's CPU
// BatchNorm does: in float32 their rounding, small against each sum, is not small against a
// gradient that the BatchNorm's projection leaves tiny (the weights before an affine-free BN).
using Stat = double;

template <typename A>
inline Stat stat_sum(int64_t n, const A* __restrict x) {
  return lane_sum<Stat>(n, [x](int64_t i) { return static_cast<Stat>(x[i]); });
}

// sum_i (x[i] - m)^2
template <typename A>
inline Stat stat_sum_sq_dev(int64_t n, const A* __restrict x, Stat m) {
  return lane_sum<Stat>(n, [x, m](int64_t i) {
    const Stat d = static_cast<Stat>(x[i]) - m;
    return d * d;
  });
}

// sum_i g[i] * x[i]
template <typename T, typename A>
inline A dot(int64_t n, const A* __restrict g, const T* __restrict x) {
  return lane_sum<A>(n, [g, x](int64_t i) { return g[i] * static_cast<A>(x[i]); });
}

// out[i] = a * g[i], and returns sum_i g[i] * y[i]: the gradient and the weight-gradient term of
// a mixed-in branch, in one pass.
template <typename T, typename A>
inline A scale_and_dot(int64_t n, A a, const A* __restrict g, const T* __restrict y, T* __restrict out) {
  return lane_sum<A>(n, [a, g, y, out](int64_t i) {
    out[i] = static_cast<T>(a * g[i]);
    return g[i] * static_cast<A>(y[i]);
  });
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
