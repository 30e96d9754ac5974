// Device helpers shared by the CUDA kernels. Torch-free, like every header of device code here:
// nvcc compiles it into the shipped kernels, g++ into the emulated ones (HDAS_CUDA_EMU, csrc/emu),
// which give the CUDA names below (threadIdx, __syncthreads, __shfl_down_sync, ...) their meaning.
#pragma once

#ifdef HDAS_CUDA_EMU
#include "../emu/cuda_emu.h"
#else
// A kernel's dynamic shared memory as T* name (the emulator defines its own).
#define HDAS_EXTERN_SHARED(T, name)                                \
  extern __shared__ __align__(16) unsigned char hdas_dynamic_smem[]; \
  T* name = reinterpret_cast<T*>(hdas_dynamic_smem)
#endif

#include <cmath>
#include <cstdint>

namespace hdas::cuda {

constexpr int kThreads = 256;  // every block; a multiple of the warp size

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
