// What the launchers (the .cu files) take from the GPU runtime, in one place: under nvcc the CUDA
// runtime on CUDA tensors; in the emulated build (HDAS_CUDA_EMU, csrc/emu) the emulator on CPU
// tensors. The launchers' own logic (checks, allocations, grid sizes, pointer tables, the order of
// kernels) is then the same source in both builds, so the emulated tests check it too.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

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
constexpr const char* kBackend = "emulated CUDA";
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
constexpr const char* kBackend = "CUDA";
using DeviceGuard = c10::cuda::CUDAGuard;
template <typename... P, typename... Args>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, Args... args) {
  kernel<<<grid, block, smem, c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif

// After an op's argument checks, which put every tensor it reads on x's device: that device is this
// backend's (the dispatcher also picks it for a CUDA tensor the op ignores, e.g. running statistics
// in training). Then the device guard: built before the checks, a CPU tensor made it fail with
// c10's "Expected a cuda device" instead of the checks' ValueError.
inline void check_device(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.device().type() == kDeviceType, op, " (", kBackend, "): the tensors must be on a ",
                    c10::DeviceTypeName(kDeviceType, /*lower_case=*/true), " device, got ", x.device());
}

// A call's tables (primitive codes, pair members, the tensors' data pointers) in one buffer of
// 8-byte slots on the op's device: the kernels take pointers into it, so their arguments stay small
// whatever the number of inputs, primitives, extras or states. Built on the host, copied to the
// device once per call (from pinned memory, without blocking the host).
class DeviceTable {
 public:
  int64_t add(c10::ArrayRef<int64_t> values) {
    const auto at = static_cast<int64_t>(slots_.size());
    slots_.insert(slots_.end(), values.begin(), values.end());
    return at;
  }
  // The tensors' data pointers (null for undefined tensors: the unused gradient slots).
  int64_t add_data(const std::vector<at::Tensor>& ts) {
    const auto at = static_cast<int64_t>(slots_.size());
    for (const auto& t : ts) {
      const void* p = t.defined() ? t.data_ptr() : nullptr;
      int64_t v;
      std::memcpy(&v, &p, sizeof(v));
      slots_.push_back(v);
    }
    return at;
  }
  void upload(const at::Device& device) {
    const auto n = static_cast<int64_t>(std::max<size_t>(1, slots_.size()));
    const auto opts = at::TensorOptions().dtype(at::kLong);
    // Written with memcpy: the kernels read the slots as int64_t and as pointers.
    auto host = at::empty({n}, device.is_cpu() ? opts : opts.pinned_memory(true));
    std::memcpy(host.data_ptr(), slots_.data(), slots_.size() * sizeof(int64_t));
    dev_ = device.is_cpu() ? host : host.to(device, /*non_blocking=*/true);
  }
  const at::Tensor& tensor() const { return dev_; }
  const int64_t* codes(int64_t at) const { return dev_.const_data_ptr<int64_t>() + at; }
  template <typename T>
  T* const* pointers(int64_t at) const {
    return reinterpret_cast<T* const*>(dev_.const_data_ptr<int64_t>() + at);
  }

 private:
  std::vector<int64_t> slots_;
  at::Tensor dev_;
};

inline int grid_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 16)));
}

// One block per (n, c) plane: the grid's x dimension holds at most 2^31 - 1 blocks.
inline unsigned plane_blocks(int64_t planes, const char* op) {
  TORCH_CHECK_VALUE(planes <= INT32_MAX, op, " (", kBackend, "): N * C must be at most ", INT32_MAX, ", got ", planes);
  return static_cast<unsigned>(planes);
}

}  // namespace hdas::cuda
