// What the launchers (the .cu files) take from the GPU runtime, in one place: under nvcc the CUDA
// runtime on CUDA tensors; in the emulated build (HDAS_CUDA_EMU, csrc/emu) the emulator on CPU
// tensors. The launchers' own logic (checks, allocations, grid sizes, pointer tables, the order of
// kernels) is then the same source in both builds, so the emulated tests check it too.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "../ops_namespace.h"
#include "device.cuh"

#ifdef HDAS_CUDA_EMU
#define HDAS_DISPATCH_KEY CPU
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define HDAS_DISPATCH_KEY CUDA
#endif

namespace hdas::cuda {

#ifdef HDAS_CUDA_EMU
constexpr c10::DeviceType kDeviceType = c10::DeviceType::CPU;
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
// Runs every block of the grid on the emulator; its arguments are copied per thread, as a GPU does.
template <typename... P, typename... Args>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, Args... args) {
  emu::launch(grid, block, smem, [=] { kernel(args...); });
}
#else
constexpr c10::DeviceType kDeviceType = c10::DeviceType::CUDA;
using DeviceGuard = c10::cuda::CUDAGuard;
template <typename... P, typename... Args>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, Args... args) {
  kernel<<<grid, block, smem, c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif

inline int grid_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 16)));
}

// One block per (n, c) plane: the grid's x dimension holds at most 2^31 - 1 blocks.
inline unsigned plane_blocks(int64_t planes, const char* op) {
  TORCH_CHECK_VALUE(planes <= INT32_MAX, op, " (CUDA): N * C must be at most ", INT32_MAX, ", got ", planes);
  return static_cast<unsigned>(planes);
}

}  // namespace hdas::cuda
