// Small device helpers shared by the CUDA kernels.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace hdas::cuda {

constexpr int kThreads = 256;  // every block; a multiple of the warp size

inline int grid_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 16)));
}

// One block per (n, c) plane: the grid's x dimension holds at most 2^31 - 1 blocks.
inline unsigned plane_blocks(int64_t planes, const char* op) {
  TORCH_CHECK_VALUE(planes <= INT32_MAX, op, " (CUDA): N * C must be at most ", INT32_MAX, ", got ", planes);
  return static_cast<unsigned>(planes);
}

// Sum of v over the block, returned to every thread. smem holds at least 32 values.
template <typename A>
__device__ A block_sum(A v, A* smem) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < warps ? smem[lane] : A(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  const A total = smem[0];
  __syncthreads();
  return total;
}

}  // namespace hdas::cuda
