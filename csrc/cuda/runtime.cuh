// What the launchers (the .cu files) take from the GPU runtime, in one place: under nvcc the CUDA
// runtime on CUDA tensors; in the emulated build (HDAS_CUDA_EMU, csrc/emu) the emulator on CPU
// tensors. The launchers' own logic (checks, allocations, grid sizes, pointer tables, the order of
// kernels) is then the same source in both builds, so the emulated tests check it too.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../ops_namespace.h"
#include "arch_check.h"
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
// Then, once per GPU, that this build holds code the GPU runs (arch_check.h): one clear error
// instead of CUDA's "no kernel image is available" from the first launch.
inline void check_device(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.device().type() == kDeviceType, op, " (", kBackend, "): the tensors must be on a ",
                    c10::DeviceTypeName(kDeviceType, /*lower_case=*/true), " device, got ", x.device());
#ifndef HDAS_CUDA_EMU
  static std::atomic<uint64_t> covered{0};  // bit i: GPU i checked (GPUs past 64 are checked every call)
  const int i = x.device().index();
  const uint64_t bit = i < 64 ? uint64_t(1) << i : 0;
  if (bit & covered.load(std::memory_order_relaxed)) return;
  int major = 0, minor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i));
  const std::string error = cuda_arch_error(major, minor, HDAS_CUDA_ARCHS);
  TORCH_CHECK(error.empty(), op, " on ", x.device(), ": ", error);
  covered.fetch_or(bit, std::memory_order_relaxed);
#endif
}

// Settings the emulated build's tests change (hdas_emu::set_test_knobs, csrc/emu/test_knobs.cpp) to
// reach every path on small tensors: the int64_t index math, tables in device memory, and
// reductions split into many chunks. Fixed at their defaults in the shipped build.
struct TestKnobs {
  bool index64 = false;        // int64_t index math whatever the sizes
  bool device_tables = false;  // tables in device memory however small
  int64_t chunk_positions = 0; // at most this many output positions per reduction chunk (0: no limit)
};
#ifdef HDAS_CUDA_EMU
inline TestKnobs& test_knobs() {
  static TestKnobs knobs;
  return knobs;
}
#else
inline TestKnobs test_knobs() { return {}; }
#endif

// Runs f(int32_t{}) when every tensor of a call has fewer than 2^31 elements (at most `numel`), so
// that the kernels' index math runs in 32 bits, else f(int64_t{}).
template <typename F>
void dispatch_index(int64_t numel, F&& f) {
  if (numel < (int64_t(1) << 31) && !test_knobs().index64) f(int32_t{});
  else f(int64_t{});
}

// A call's tables (primitive codes, pair members, the tensors' data pointers) as 8-byte slots for
// the kernels (Slots, device.cuh): in the launch parameters when they fit, so that a call copies
// nothing to the device; else copied to the device once (from pinned memory, without blocking the
// host), with no limit on the number of inputs, primitives, extras or states.
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
  // null pointers: slots the kernels never read (e.g. the gradients' in a forward).
  int64_t add_null(int64_t n) { return add(std::vector<int64_t>(n, 0)); }
  Slots slots(const at::Device& device) {
    Slots s{};
    if (slots_.size() <= static_cast<size_t>(Slots::kInline) && !test_knobs().device_tables) {
      s.dev = nullptr;
      std::copy(slots_.begin(), slots_.end(), s.inl);
      return s;
    }
    const auto n = static_cast<int64_t>(slots_.size());
    const auto opts = at::TensorOptions().dtype(at::kLong);
    // Written with memcpy: the kernels read the slots as int64_t and as pointers.
    auto host = at::empty({n}, device.is_cpu() ? opts : opts.pinned_memory(true));
    std::memcpy(host.data_ptr(), slots_.data(), slots_.size() * sizeof(int64_t));
    dev_ = device.is_cpu() ? host : host.to(device, /*non_blocking=*/true);
    s.dev = dev_.const_data_ptr<int64_t>();
    return s;
  }

 private:
  std::vector<int64_t> slots_;
  at::Tensor dev_;  // kept alive for the call's kernels
};

inline int grid_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 16)));
}

// ceil(n / per_block) blocks, at least one; the grid's x dimension holds at most 2^31 - 1.
inline unsigned blocks_for(int64_t n, int64_t per_block, const char* op) {
  const int64_t blocks = std::max<int64_t>(1, (n + per_block - 1) / per_block);
  TORCH_CHECK_VALUE(blocks <= INT32_MAX, op, " (", kBackend, "): ", n, " elements need more than ", INT32_MAX,
                    " blocks of ", per_block);
  return static_cast<unsigned>(blocks);
}

}  // namespace hdas::cuda
