// Device helpers shared by the CUDA kernels. Torch-free, like every header of device code here:
// nvcc compiles it into the shipped kernels, g++ into the emulated ones (HDAS_CUDA_EMU, csrc/emu),
// which give the CUDA names below (threadIdx, __syncthreads, __shfl_xor_sync, ...) their meaning.
#pragma once

#ifdef HDAS_CUDA_EMU
#include "../emu/cuda_emu.h"
#else
// A kernel's dynamic shared memory as T* name, and its static shared arrays (dims: the bracketed
// extents, e.g. HDAS_SHARED(float, tile, [8][33])): the emulator defines its own, per block and
// poisoned, so that every shared array of the kernels is declared through these two.
#define HDAS_EXTERN_SHARED(T, name)                                \
  extern __shared__ __align__(16) unsigned char hdas_dynamic_smem[]; \
  T* name = reinterpret_cast<T*>(hdas_dynamic_smem)
#define HDAS_SHARED(T, name, ...) __shared__ T name __VA_ARGS__
#endif

#include <cmath>
#include <cstdint>

namespace hdas::cuda {

constexpr int kThreads = 256;  // every block; a multiple of the warp size
constexpr int kWarps = kThreads / 32;
// Blocks of kThreads the streaming kernels ask to fit on an SM at once (__launch_bounds__): at most 64
// registers a thread, half of an SM's 64 warps resident (benchmarks/gpu_model.py's occupancy bar).
constexpr int kMinBlocks = 4;
constexpr unsigned kFull = 0xffffffffu;

// A call's small tables (primitive codes, pair members, the tensors' data pointers) as 8-byte
// slots, passed by value in the kernel's parameters (declared __grid_constant__, so that indexing
// them at run time reads the parameter space instead of a per-thread copy): no host-to-device copy
// per call. A call with more slots than fit keeps them in device memory instead (dev).
struct Slots {
  static constexpr int kInline = 96;
  const int64_t* dev;
  int64_t inl[kInline];
  __device__ int64_t at(int64_t i) const { return dev != nullptr ? dev[i] : inl[i]; }
  template <typename T>
  __device__ T* ptr(int64_t i) const {
    return reinterpret_cast<T*>(at(i));
  }
};

// n / d for 0 <= n, d < 2^31 without a division: with l = ceil(log2 d) and
// m = floor(2^32 * (2^l - d) / d) + 1, n / d = (umulhi(n, m) + n) >> l (the sum stays below 2^32).
// The int64_t version divides: the kernels' index math runs in int32_t whenever every tensor of a
// call has fewer than 2^31 elements, and in int64_t (this) otherwise.
template <typename I>
struct Div {
  I d = 1;
  Div() = default;
  explicit Div(I d_) : d(d_) {}
  __host__ __device__ I div(I n) const { return n / d; }
};

template <>
struct Div<int32_t> {
  int32_t d = 1;
  uint32_t m = 1, l = 0;
  Div() = default;
  explicit Div(int32_t d_) : d(d_) {
    while ((int64_t(1) << l) < d) ++l;
    m = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << l) - uint64_t(d))) / uint64_t(d) + 1);
  }
  __host__ __device__ int32_t div(int32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t t = __umulhi(static_cast<uint32_t>(n), m);
#else
    const uint32_t t = static_cast<uint32_t>((uint64_t(static_cast<uint32_t>(n)) * m) >> 32);
#endif
    return static_cast<int32_t>((t + static_cast<uint32_t>(n)) >> l);
  }
};

// Sum of v over the block, returned to every thread. smem holds at least 32 values.
template <typename A>
__device__ A block_sum(A v, A* smem) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFull, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < warps ? smem[lane] : A(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFull, v, o);
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  const A total = smem[0];
  __syncthreads();
  return total;
}

// Batch statistics from per-chunk ones (mixed_node's pools, conv_candidates' pointwise outputs): one
// block per (e*Q + q, c), Chan et al.'s pairwise combination of the chunks' (mean, M2) over the N
// samples and S chunks of `chunk` positions per plane, stable where a sum / sum of squares is not.
template <typename A>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    combine_stats_kernel(const A* partial, int64_t N, int64_t S, int64_t chunk, int64_t C, int64_t EQ, int64_t L,
                         A eps, A* mean, A* invstd, A* var_u) {
  HDAS_SHARED(A, smem, [32]);
  const int64_t j = blockIdx.x, eq = j / C, c = j % C, units = N * S;
  auto at = [&](int64_t u) { return partial + (u * EQ + eq) * 2 * C + c; };  // [0]: mean, [C]: M2
  auto count = [&](int64_t u) {
    const int64_t s = u % S;
    return static_cast<A>(min(L, s * chunk + chunk) - s * chunk);
  };
  const A total = static_cast<A>(N * L);
  A m = 0;
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) m += count(u) * at(u)[0];
  m = block_sum(m, smem) / total;
  A m2 = 0;
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    const A d = at(u)[0] - m;
    m2 += at(u)[C] + count(u) * d * d;
  }
  m2 = block_sum(m2, smem);
  if (threadIdx.x == 0) {
    mean[j] = m;
    invstd[j] = A(1) / sqrt(m2 / total + eps);
    var_u[j] = m2 / (total - A(1));
  }
}

}  // namespace hdas::cuda
