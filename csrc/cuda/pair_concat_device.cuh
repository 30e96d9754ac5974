// Device code of hdas::pair_concat. Torch-free (see device.cuh): included by the launcher
// pair_concat_kernel.cu for nvcc and by the emulated build for g++.
//
// The kernels see only the R states some pair references, all in one layout (NCHW or
// channels_last), and compute u[r] and v[r] (the summed weights of the pairs whose first / second
// member state r is) themselves from the weights: no index tensors, no index_add_.
#pragma once

#include <cstdint>

#include "device.cuh"

namespace hdas::cuda {

// The slots of a call (Slots): [0, R) the states' data pointers, [R, 2R) their gradients' (null in
// the forward), [2R, 3R) their roles (bit 0: some pair's first member, bit 1: some pair's second),
// [3R, 3R + K) each pair's first member r, [3R + K, 3R + 2K) its second.
struct PairLayout {
  int R, K;
  __device__ int64_t role(const Slots& t, int r) const { return t.at(2 * R + r); }
  __device__ int64_t first(const Slots& t, int k) const { return t.at(3 * R + k); }
  __device__ int64_t second(const Slots& t, int k) const { return t.at(3 * R + K + k); }
};

// Element i of a state (in its layout) lands at i + (i / inner) * inner in the output's first half
// and inner elements further in its second half: inner = C*H*W for NCHW, C for channels_last.
template <typename I>
struct PairGeo {
  I total;  // elements of one state
  Div<I> inner;
  __device__ I first_at(I i) const { return i + inner.div(i) * inner.d; }
};

constexpr int kPairPer = 4;    // elements per thread: a block covers kPairPer * kThreads in a row
constexpr int kPairGroup = 32; // states whose u, v a block holds in shared memory at a time

// uv[j] = u[r0 + j], uv[kPairGroup + j] = v[r0 + j] for j < n, summed over the pairs in order.
template <typename A>
__device__ void pair_coefs(const Slots& t, PairLayout L, const A* w, int r0, int n, A* uv) {
  const int j = threadIdx.x;
  if (j >= n) return;
  A u = 0, v = 0;
  for (int k = 0; k < L.K; ++k) {
    if (L.first(t, k) == r0 + j) u += w[k];
    if (L.second(t, k) == r0 + j) v += w[k];
  }
  uv[j] = u;
  uv[kPairGroup + j] = v;
}

template <typename T, typename A, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    forward_kernel(const __grid_constant__ Slots t, PairLayout L, PairGeo<I> g, const A* w, T* out) {
  HDAS_SHARED(A, uv, [2 * kPairGroup]);
  const I base = I(blockIdx.x) * (kPairPer * kThreads) + I(threadIdx.x);
  A a[kPairPer], b[kPairPer];
  for (int k = 0; k < kPairPer; ++k) a[k] = b[k] = A(0);
  for (int r0 = 0; r0 < L.R; r0 += kPairGroup) {
    const int n = min(kPairGroup, L.R - r0);
    __syncthreads();  // the previous group's coefficients are read
    pair_coefs(t, L, w, r0, n, uv);
    __syncthreads();
    for (int j = 0; j < n; ++j) {
      const T* s = t.ptr<const T>(r0 + j);
      const int64_t role = L.role(t, r0 + j);
      const A u = uv[j], v = uv[kPairGroup + j];
#pragma unroll
      for (int k = 0; k < kPairPer; ++k) {
        const I i = base + k * kThreads;
        if (i >= g.total) break;
        const A x = static_cast<A>(s[i]);
        // A state only one half reads adds nothing to the other (not even 0 * NaN).
        if (role & 1) a[k] += u * x;
        if (role & 2) b[k] += v * x;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kPairPer; ++k) {
    const I i = base + k * kThreads;
    if (i >= g.total) break;
    const I o = g.first_at(i);
    out[o] = static_cast<T>(a[k]);
    out[o + g.inner.d] = static_cast<T>(b[k]);
  }
}

// The states' gradients u*g1 + v*g2, and per block the sums of g1*s and g2*s of every state into
// partial[block][r] and partial[block][R + r] (the weight gradients' terms, summed by
// weight_grad_kernel in a fixed order). A warp's two sums of state j sit side by side in dots (columns
// 2j, 2j + 1), so that the threads summing them over the warps read consecutive banks.
template <typename T, typename A, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks) backward_kernel(const __grid_constant__ Slots t, PairLayout L, PairGeo<I> g,
                                                           const T* grad, const A* w, A* partial) {
  HDAS_SHARED(A, uv, [2 * kPairGroup]);
  HDAS_SHARED(A, dots, [kWarps][2 * kPairGroup]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const I base = I(blockIdx.x) * (kPairPer * kThreads) + I(threadIdx.x);
  A g1[kPairPer], g2[kPairPer];
#pragma unroll
  for (int k = 0; k < kPairPer; ++k) {
    const I i = base + k * kThreads;
    g1[k] = g2[k] = A(0);  // past the end: adds nothing to the sums
    if (i < g.total) {
      const I o = g.first_at(i);
      g1[k] = static_cast<A>(grad[o]);
      g2[k] = static_cast<A>(grad[o + g.inner.d]);
    }
  }
  for (int r0 = 0; r0 < L.R; r0 += kPairGroup) {
    const int n = min(kPairGroup, L.R - r0);
    __syncthreads();  // the previous group's coefficients and sums are read
    pair_coefs(t, L, w, r0, n, uv);
    __syncthreads();
    for (int j = 0; j < n; ++j) {
      const T* s = t.ptr<const T>(r0 + j);
      T* gs = t.ptr<T>(L.R + r0 + j);
      const int64_t role = L.role(t, r0 + j);
      const A u = uv[j], v = uv[kPairGroup + j];
      A d1 = 0, d2 = 0;
#pragma unroll
      for (int k = 0; k < kPairPer; ++k) {
        const I i = base + k * kThreads;
        if (i >= g.total) break;
        const A x = static_cast<A>(s[i]);
        d1 += g1[k] * x;
        d2 += g2[k] * x;
        A gx = 0;
        if (role & 1) gx += u * g1[k];
        if (role & 2) gx += v * g2[k];
        gs[i] = static_cast<T>(gx);
      }
      for (int o = 16; o > 0; o >>= 1) {
        d1 += __shfl_xor_sync(kFull, d1, o);
        d2 += __shfl_xor_sync(kFull, d2, o);
      }
      if (lane == 0) {
        dots[warp][2 * j] = d1;
        dots[warp][2 * j + 1] = d2;
      }
    }
    __syncthreads();
    const int col = threadIdx.x;
    if (col < 2 * n) {
      A sum = 0;
      for (int wp = 0; wp < kWarps; ++wp) sum += dots[wp][col];
      partial[int64_t(blockIdx.x) * 2 * L.R + (col % 2) * L.R + r0 + col / 2] = sum;
    }
  }
}

// One block per pair k: grad_w[k] = sum over the blocks of partial[b][first_k] + partial[b][R + second_k].
template <typename A>
__global__ void __launch_bounds__(kThreads, kMinBlocks) weight_grad_kernel(const __grid_constant__ Slots t, PairLayout L,
                                                               const A* partial, int64_t blocks, A* grad_w) {
  HDAS_SHARED(A, smem, [32]);
  const int k = blockIdx.x;
  const int64_t f = L.first(t, k), s = L.R + L.second(t, k), row = 2 * L.R;
  A sum = 0;
  for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) sum += partial[b * row + f] + partial[b * row + s];
  sum = block_sum(sum, smem);
  if (threadIdx.x == 0) grad_w[k] = sum;
}

}  // namespace hdas::cuda
