// Device code of hdas::pair_concat (contiguous NCHW states). Torch-free (see device.cuh): included
// by the launcher pair_concat_kernel.cu for nvcc and by the emulated build for g++.
#pragma once

#include <cstdint>

#include "device.cuh"

namespace hdas::cuda {

// The T states' data pointers, their gradients' (backward) and whether each is some pair's first
// or second member (nonzero), in device memory.
template <typename T>
struct States {
  const T* const* p;
  T* const* g;
  const int64_t* first;
  const int64_t* second;
};

template <typename T, typename A>
__global__ void forward_kernel(States<T> st, int T_, int64_t N, int64_t C, int64_t HW, const A* u, const A* v,
                               T* out) {
  const int64_t total = N * C * HW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / (C * HW), r = i % (C * HW);
    A a = 0, b = 0;
    for (int t = 0; t < T_; ++t) {
      if (!st.first[t] && !st.second[t]) continue;
      const A x = static_cast<A>(st.p[t][i]);
      if (st.first[t]) a += u[t] * x;
      if (st.second[t]) b += v[t] * x;
    }
    out[n * 2 * C * HW + r] = static_cast<T>(a);
    out[n * 2 * C * HW + C * HW + r] = static_cast<T>(b);
  }
}

// One block per (n, c) plane.
template <typename T, typename A>
__global__ void backward_kernel(States<T> st, int T_, int64_t C, int64_t HW, const T* grad, const A* u, const A* v,
                                A* dots) {
  __shared__ A smem[32];
  const int64_t plane = blockIdx.x, n = plane / C, c = plane % C;
  const T* g1 = grad + (n * 2 * C + c) * HW;
  const T* g2 = g1 + C * HW;
  for (int t = 0; t < T_; ++t) {
    const T* s = st.p[t] + plane * HW;
    T* gs = st.g[t] + plane * HW;
    A d1 = 0, d2 = 0;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      const A a = static_cast<A>(g1[i]), b = static_cast<A>(g2[i]), x = static_cast<A>(s[i]);
      d1 += a * x;
      d2 += b * x;
      gs[i] = static_cast<T>(u[t] * a + v[t] * b);
    }
    d1 = block_sum(d1, smem);
    d2 = block_sum(d2, smem);
    if (threadIdx.x == 0) {
      dots[plane * 2 * T_ + t] = d1;
      dots[plane * 2 * T_ + T_ + t] = d2;
    }
  }
}

}  // namespace hdas::cuda
