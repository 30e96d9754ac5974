// A small emulation of the CUDA execution model on the CPU, enough to run this project's kernels
// (csrc/cuda/*.cuh) unchanged, compiled by g++ with HDAS_CUDA_EMU defined. Never part of the
// shipped build: csrc/emu/build.py builds the emulated ops for the tests and the sanitizer checks.
//
// The model (cuda_emu.cpp; docs/kernels.md has the modes and how to select them):
// - launch() runs the blocks of the grid on a pool of runner threads, several blocks at once
//   (HDAS_EMU_BLOCKS, default 2), each block on one runner from its start to its end.
// - Every CUDA thread of a block is a fiber on its block's runner. The runner resumes each runnable
//   thread until it reaches a synchronisation point (__shfl_*_sync, __syncwarp, __ballot_sync,
//   __syncthreads, the end of the kernel), then completes the warp operations and barriers every
//   participant has reached, and goes round again: in thread order, or in an order drawn anew each
//   round from a seeded generator (HDAS_EMU_SEED), which interleaves the lanes of a warp and the
//   warps of a block differently for every seed. In the checked build a thread is also preempted at
//   random global and shared memory accesses.
// - Warp operations check their mask: every lane named must exist, must not have exited, and must
//   reach the same operation; a lane waiting where no other can join it is a deadlock. A
//   __syncthreads must be reached by every thread of the block at the same call (HDAS_EMU_BARRIER=
//   relaxed lets exited threads count as arrived). Each of these ends the launch with an error
//   (std::runtime_error) instead of a hang.
// - Shared memory belongs to the block: HDAS_SHARED(T, name, [dims]) declares a static __shared__
//   array (per block, filled with a poison pattern, a NaN in every float type, when the block first
//   reaches the declaration), HDAS_EXTERN_SHARED the dynamic one (poisoned at the block's start).
//   A bare `__shared__` (a per-runner thread_local, not poisoned) fails the build (build.py makes
//   its deprecation an error).
// - The checked build (build.py --checked) instruments every memory access of the kernels
//   (cuda_emu.cpp, "checked build"): a read of a poisoned value (shared memory, or a global
//   allocation no one has written since it was allocated) and an access outside an allocation are
//   reported with the kernel, block, thread and index; it also counts the memory traffic of every
//   launch for benchmarks/gpu_model.py.
// - Atomics are std::atomic_ref operations; __ldg is a plain load; the half and bfloat16 types the
//   launchers instantiate the kernels with are c10::Half / c10::BFloat16, whose host conversions
//   round as the device's do.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__ __restrict
// Kernels declare static shared memory with HDAS_SHARED (below); a bare __shared__ variable is one
// per runner thread, neither poisoned nor reset between blocks.
#define __shared__ [[deprecated("use HDAS_SHARED(T, name, [dims]) for per-block, poisoned shared memory")]] static thread_local

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
constexpr int warpSize = 32;

namespace hdas::emu {

// The indices of the CUDA thread running now (the running lane's, on this warp's thread).
struct ThreadView {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
inline thread_local const ThreadView* current_view = nullptr;
inline const ThreadView& view() { return *current_view; }

// How launches run (cuda_emu.cpp reads the defaults from HDAS_EMU_SEED, HDAS_EMU_BLOCKS and
// HDAS_EMU_BARRIER once).
struct Options {
  int64_t seed = -1;          // < 0: threads in order; else the seed of the random interleaving
  int blocks = 2;             // blocks run at once, each on a runner thread
  bool strict_barrier = true; // a __syncthreads that a thread of the block has exited before is an error
};
Options options();
void set_options(const Options& o);
// What the emulator was built with and runs under, in words.
const char* describe_mode();

// Runs closure(...) as every thread of every block; throws std::runtime_error on a bad launch
// configuration, a synchronisation error or (checked build) a memory error inside the kernel.
// kernel: the kernel's address, for its name in reports (nullptr: "kernel").
void launch_erased(dim3 grid, dim3 block, size_t dynamic_smem, void (*invoke)(const void*), const void* closure,
                   const void* kernel);
template <typename F>
void launch(dim3 grid, dim3 block, size_t dynamic_smem, const F& f, const void* kernel = nullptr) {
  launch_erased(grid, block, dynamic_smem, [](const void* c) { (*static_cast<const F*>(c))(); }, &f, kernel);
}

// This block's dynamic shared memory.
void* dynamic_shared();
// This block's instance of the static shared array declared at `tag` (one per HDAS_SHARED).
void* static_shared(const void* tag, size_t bytes, size_t align);

// The checked build (build.py --checked; checked_build() says whether this is it). Global memory is
// what is tracked: [data, data + bytes) with a redzone either side (csrc/emu/checked_alloc.cpp tracks
// every CPU allocation of torch). poison() fills memory with the poison pattern.
bool checked_build();
void track_allocation(const void* data, size_t bytes, size_t redzone);
void untrack_allocation(const void* data);
void poison(void* p, size_t bytes);
// Memory traffic of the launches between profile_start() and profile_take(), one JSON object per
// launch and line (checked build; empty otherwise).
void profile_start();
std::string profile_take();

enum class WarpOp : int { kSync, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot };
// A warp-synchronous operation of the calling lane over `mask`: waits until every lane of the mask
// reaches it, then returns this lane's result (see cuda_emu.cpp).
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width);
void syncthreads();
unsigned active_mask();

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of 1-8 byte values");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace hdas::emu

#define threadIdx (::hdas::emu::view().thread_idx)
#define blockIdx (::hdas::emu::view().block_idx)
#define blockDim (::hdas::emu::view().block_dim)
#define gridDim (::hdas::emu::view().grid_dim)

// Dynamic shared memory: `extern __shared__ T name[]` under nvcc.
#define HDAS_EXTERN_SHARED(T, name) T* name = static_cast<T*>(::hdas::emu::dynamic_shared())
// Static shared memory: `__shared__ T name[d0][d1]...` under nvcc (dims: the bracketed extents).
#define HDAS_SHARED(T, name, ...)                                                                  \
  using hdas_shared_type_##name = T __VA_ARGS__;                                                  \
  static char hdas_shared_tag_##name;                                                             \
  hdas_shared_type_##name& name = *static_cast<hdas_shared_type_##name*>(::hdas::emu::static_shared( \
      &hdas_shared_tag_##name, sizeof(hdas_shared_type_##name), alignof(hdas_shared_type_##name)))

inline __attribute__((always_inline)) void __syncthreads() { ::hdas::emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::hdas::emu::warp_op(::hdas::emu::WarpOp::kSync, mask, 0, 0, 32); }
inline unsigned __activemask() { return ::hdas::emu::active_mask(); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(::hdas::emu::warp_op(::hdas::emu::WarpOp::kBallot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return (__ballot_sync(mask, pred) & mask) != 0; }
inline int __all_sync(unsigned mask, int pred) { return (__ballot_sync(mask, pred) & mask) == mask; }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  using namespace ::hdas::emu;
  return from_bits<T>(warp_op(WarpOp::kShflIdx, mask, to_bits(v), src_lane, width));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  using namespace ::hdas::emu;
  return from_bits<T>(warp_op(WarpOp::kShflUp, mask, to_bits(v), static_cast<int>(delta), width));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  using namespace ::hdas::emu;
  return from_bits<T>(warp_op(WarpOp::kShflDown, mask, to_bits(v), static_cast<int>(delta), width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  using namespace ::hdas::emu;
  return from_bits<T>(warp_op(WarpOp::kShflXor, mask, to_bits(v), lane_mask, width));
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}

template <typename T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <typename T>
T atomicSub(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_sub(v);
}
template <typename T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}
template <typename T>
T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;
}
namespace hdas::emu {
// Stores v where it beats the value at p; returns the old value.
template <typename T, typename Beats>
T atomic_keep(T* p, T v, Beats beats) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (beats(v, old) && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
}  // namespace hdas::emu
template <typename T>
T atomicMax(T* p, T v) {
  return ::hdas::emu::atomic_keep(p, v, [](T a, T b) { return b < a; });
}
template <typename T>
T atomicMin(T* p, T v) {
  return ::hdas::emu::atomic_keep(p, v, [](T a, T b) { return a < b; });
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// The math the kernels call unqualified, as CUDA declares it for float and double alike.
namespace hdas::cuda {
using std::fma;
using std::max;
using std::min;
using std::sqrt;
template <typename A>
A rsqrt(A x) {
  return A(1) / std::sqrt(x);
}
}  // namespace hdas::cuda
