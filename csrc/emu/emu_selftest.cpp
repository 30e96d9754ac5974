// The emulator's own checks (torch-free): thread indices, the block barrier, warp shuffles and
// ballots against their CUDA definitions, the kernels' 32-bit divider, atomics, shared memory per
// block and poisoned, the launch limits, that synchronisation errors end a launch with an error
// instead of a hang, and the modes: seeded interleavings, blocks at once, strict barriers and (in the
// checked build) the memory checks and traffic counts. Built and run by csrc/emu/build.py --run (and
// so by .ci/run), also checked and under the sanitizers.
#include <chrono>
#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../cuda/device.cuh"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}

template <typename F>
void expect_error(const std::string& what, const std::string& words, F&& f) {
  try {
    f();
    check(false, what + ": no error");
  } catch (const std::runtime_error& e) {
    check(std::string(e.what()).find(words) != std::string::npos, what + ": unexpected message: " + e.what());
  }
}

__global__ void indices_kernel(int* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = static_cast<int>(b * 10000 + t);
}

// Each thread writes its slot, then (after the barrier) reads its neighbour's: wrong without one.
__global__ void barrier_kernel(int rounds, int* out) {
  HDAS_SHARED(int, buf, [1024]);
  const int t = threadIdx.x, n = blockDim.x;
  int v = t;
  for (int r = 0; r < rounds; ++r) {
    buf[t] = v;
    __syncthreads();
    v = buf[(t + 1) % n] + 1;
    __syncthreads();
  }
  out[blockIdx.x * n + t] = v;
}

__global__ void block_sum_kernel(const double* x, int n, double* out) {
  HDAS_SHARED(double, smem, [32]);
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
  const double total = hdas::cuda::block_sum(s, smem);
  if (threadIdx.x == blockDim.x - 1) out[blockIdx.x] = total;  // every thread has it
}

__global__ void shuffle_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  int* o = out + threadIdx.x * 8;
  o[0] = __shfl_sync(0xffffffffu, lane * 3, 31 - lane);
  o[1] = __shfl_up_sync(0xffffffffu, lane * 3, 5);
  o[2] = __shfl_down_sync(0xffffffffu, lane * 3, 7);
  o[3] = __shfl_xor_sync(0xffffffffu, lane * 3, 6);
  o[4] = __shfl_down_sync(0xffffffffu, lane * 3, 3, 8);
  o[5] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[6] = __any_sync(0xffffffffu, lane == 17) + 2 * __all_sync(0xffffffffu, lane < 32);
  o[7] = static_cast<int>(__shfl_down_sync(0xffffffffu, static_cast<double>(lane) + 0.5, 1) * 2);
}

// Half the warp shuffles among itself while the other half waits at __syncwarp over its own half.
__global__ void partial_mask_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  int v = lane;
  if (lane < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1);
  else __syncwarp(0xffff0000u);
  out[threadIdx.x] = v;
}

__global__ void atomic_kernel(double* sum, int* count) {
  atomicAdd(sum, 0.5);
  atomicAdd(count, 1);
  atomicMax(count + 1, static_cast<int>(threadIdx.x + blockIdx.x * blockDim.x));
}

__global__ void dynamic_smem_kernel(float* out) {
  HDAS_EXTERN_SHARED(float, buf);
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];  // read before any write: the fill value
  buf[threadIdx.x] = 1.0f;
}

__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 40) return;  // warps 2.. exit, warp 1 half-exits
  HDAS_SHARED(int, s, [64]);
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * 40 + threadIdx.x] = s[39 - threadIdx.x];
}

__global__ void divergent_shuffle_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  if (lane < 16) out[threadIdx.x] = __shfl_down_sync(0xffffffffu, lane, 1);
  else __syncwarp();  // the other half waits elsewhere: neither can complete
}

__global__ void half_warp_shuffle_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  if (lane < 16) out[threadIdx.x] = __shfl_down_sync(0xffffffffu, lane, 1);  // lanes 16.. have exited
}

__global__ void exited_mask_kernel(int* out) {
  if ((threadIdx.x & 31) == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

__global__ void mixed_sync_kernel(int* out) {
  if (threadIdx.x == 0) __syncthreads();
  else out[blockIdx.x * blockDim.x + threadIdx.x] = __shfl_down_sync(0xffffffffu, 1, 1);  // names lane 0, waiting elsewhere
}

__global__ void outside_mask_kernel(int* out) {
  out[threadIdx.x] = __shfl_down_sync(0xfffffffeu, 1, 1);  // lane 0 calls it with a mask without itself
}

// Static shared memory is the block's own: each block reads it before writing (poison: NaN), writes
// its index, and reads it back after a barrier.
__global__ void static_smem_kernel(float* before, float* after) {
  HDAS_SHARED(float, buf, [64]);
  HDAS_SHARED(double, other, [3][5]);
  if (threadIdx.x == 0) {
    before[blockIdx.x] = buf[5];
    other[2][4] = 1.0;
  }
  __syncthreads();
  buf[threadIdx.x] = static_cast<float>(blockIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) after[blockIdx.x] = buf[63] + static_cast<float>(other[2][4]);
}

// Each lane writes its slot and reads its neighbour's with no __syncwarp in between: the value seen
// depends on the order the lanes ran in.
__global__ void lane_race_kernel(int* seen) {
  HDAS_SHARED(int, buf, [32]);
  const int lane = threadIdx.x & 31;
  buf[lane] = 0;
  __syncwarp();
  buf[lane] = lane + 1;
  seen[threadIdx.x] = buf[(lane + 1) & 31] == ((lane + 1) & 31) + 1;
}

// How many blocks run at once: each block waits (up to a second) for another to start.
std::atomic<int> active{0}, most{0};
__global__ void concurrency_kernel() {
  if (threadIdx.x != 0) return;
  const int now = active.fetch_add(1) + 1;
  int m = most.load();
  while (now > m && !most.compare_exchange_weak(m, now)) {
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (most.load() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  active.fetch_sub(1);
}

__global__ void copy_kernel(const float* in, float* out, int n, int stride) {
  const int i = threadIdx.x;
  if (i < n) out[i] = in[i * stride];
}

__global__ void shared_stride_kernel(float* out, int stride) {
  HDAS_SHARED(float, tile, [32 * 33]);
  tile[threadIdx.x * stride] = 1.0f;
  __syncwarp();
  out[threadIdx.x] = tile[threadIdx.x * stride];
}

}  // namespace

int main() {
  using hdas::emu::launch;
  {  // indices, 3-D blocks and grids, a partial last warp
    const dim3 grid(3, 2, 2), block(5, 3, 3);
    std::vector<int> out(12 * 45, -1);
    launch(grid, block, 0, [p = out.data()] { indices_kernel(p); });
    bool ok = true;
    for (int b = 0; b < 12; ++b)
      for (int t = 0; t < 45; ++t) ok &= out[b * 45 + t] == b * 10000 + t;
    check(ok, "thread and block indices");
  }
  {  // barrier across 8 and 32 warps
    for (int n : {256, 1024}) {
      std::vector<int> out(2 * n);
      launch(dim3(2), dim3(n), 0, [p = out.data(), n] { barrier_kernel(5, p); });
      bool ok = true;
      for (int b = 0; b < 2; ++b)
        for (int t = 0; t < n; ++t) ok &= out[b * n + t] == (t + 5) % n + 5;
      check(ok, "__syncthreads across " + std::to_string(n / 32) + " warps");
    }
  }
  {  // block_sum of the kernels, for block sizes of 1..8 warps and ragged ones
    for (int threads : {32, 64, 96, 256, 1024}) {
      const int blocks = 3, n = 1000;
      std::vector<double> x(blocks * n), out(blocks);
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i % 97) - 40.0;
      launch(dim3(blocks), dim3(threads), 0, [&] { block_sum_kernel(x.data(), n, out.data()); });
      bool ok = true;
      for (int b = 0; b < blocks; ++b) {
        double want = 0;
        for (int i = 0; i < n; ++i) want += x[b * n + i];
        ok &= out[b] == want;
      }
      check(ok, "block_sum with " + std::to_string(threads) + " threads");
    }
  }
  {  // shuffles and votes against their definitions
    std::vector<int> out(64 * 8);
    launch(dim3(1), dim3(64), 0, [p = out.data()] { shuffle_kernel(p); });
    bool ok = true;
    for (int t = 0; t < 64; ++t) {
      const int l = t % 32, *o = &out[t * 8];
      unsigned ballot = 0;
      for (int j = 0; j < 32; j += 3) ballot |= 1u << j;
      ok &= o[0] == (31 - l) * 3;
      ok &= o[1] == (l >= 5 ? l - 5 : l) * 3;
      ok &= o[2] == (l + 7 < 32 ? l + 7 : l) * 3;
      ok &= o[3] == (l ^ 6) * 3;
      ok &= o[4] == ((l % 8) + 3 < 8 ? l + 3 : l) * 3;
      ok &= static_cast<unsigned>(o[5]) == ballot;
      ok &= o[6] == 3;
      ok &= o[7] == 2 * (l + 1 < 32 ? l + 1 : l) + 1;
    }
    check(ok, "shuffles, ballot, any, all");
  }
  {
    std::vector<int> out(32);
    launch(dim3(1), dim3(32), 0, [p = out.data()] { partial_mask_kernel(p); });
    bool ok = true;
    for (int l = 0; l < 32; ++l) ok &= out[l] == (l < 16 ? (l ^ 1) : l);
    check(ok, "shuffle over half a warp while the other half syncs");
  }
  {  // atomics from every warp of several blocks
    double sum = 0;
    int count[2] = {0, -1};
    launch(dim3(4), dim3(256), 0, [&] { atomic_kernel(&sum, count); });
    check(sum == 512.0 && count[0] == 1024 && count[1] == 1023, "atomicAdd / atomicMax");
  }
  const bool checked = hdas::emu::checked_build();
  const hdas::emu::Options base = hdas::emu::options();
  auto with = [&](auto change, auto&& f) {  // runs f under changed options, then restores them
    hdas::emu::Options o = base;
    change(o);
    hdas::emu::set_options(o);
    f();
    hdas::emu::set_options(base);
  };
  if (!checked) {  // shared memory is poisoned (NaN) at every block's start; the checked build reports it
    std::vector<float> out(3 * 64, 0.0f);
    launch(dim3(3), dim3(64), 64 * sizeof(float), [p = out.data()] { dynamic_smem_kernel(p); });
    bool ok = true;
    for (float v : out) ok &= v != v;
    check(ok, "dynamic shared memory reads NaN before a write");
    std::vector<float> before(6, 0.0f), after(6, 0.0f);
    launch(dim3(6), dim3(64), 0, [&] { static_smem_kernel(before.data(), after.data()); });
    for (int b = 0; b < 6; ++b) ok &= before[b] != before[b] && after[b] == static_cast<float>(b) + 1.0f;
    check(ok, "static shared memory: per block, NaN before a write");
  } else {
    std::vector<float> out(3 * 64), before(6), after(6);
    expect_error("dynamic shared memory read before a write", "shared memory no thread of the block has written", [&] {
      launch(dim3(3), dim3(64), 64 * sizeof(float), [p = out.data()] { dynamic_smem_kernel(p); });
    });
    expect_error("static shared memory read before a write", "a static shared array (HDAS_SHARED), index 5", [&] {
      launch(dim3(6), dim3(64), 0, [&] { static_smem_kernel(before.data(), after.data()); });
    });
  }
  {  // a __syncthreads after some threads exited: an error, unless barriers are relaxed
    std::vector<int> out(2 * 40, -1);
    expect_error("__syncthreads after some threads exited", "__syncthreads reached by 40 of the block's 256", [&] {
      with([](auto& o) { o.strict_barrier = true; },
           [&] { launch(dim3(2), dim3(256), 0, [p = out.data()] { early_exit_kernel(p); }); });
    });
    with([](auto& o) { o.strict_barrier = false; },
         [&] { launch(dim3(2), dim3(256), 0, [p = out.data()] { early_exit_kernel(p); }); });
    bool ok = true;
    for (int t = 0; t < 80; ++t) ok &= out[t] == 39 - t % 40;
    check(ok, "relaxed barriers: __syncthreads after some threads exited");
  }
#if !defined(__SANITIZE_THREAD__)  // the kernel races on purpose: ThreadSanitizer would (rightly) stop here
  {  // interleavings: in order, lane 31 alone sees its neighbour's write; seeds vary it, reproducibly
    auto seen = [&](int64_t seed) {
      std::vector<int> out(64);
      with([&](auto& o) { o.seed = seed; },
           [&] { launch(dim3(1), dim3(64), 0, [p = out.data()] { lane_race_kernel(p); }); });
      return out;
    };
    const auto ordered = seen(-1);
    int n = 0;
    for (int t = 0; t < 32; ++t) n += ordered[t];
    check(n == 1 && ordered[31] == 1, "threads in order: " + std::to_string(n) + " lanes saw a later lane's write");
    std::set<std::vector<int>> outcomes;
    for (int64_t seed = 0; seed < 6; ++seed) outcomes.insert(seen(seed));
    check(outcomes.size() >= 4, "seeded interleavings: " + std::to_string(outcomes.size()) + " outcomes of 6 seeds");
    check(seen(3) == seen(3), "an interleaving is reproducible from its seed");
  }
#endif
  {  // blocks at once
    with([](auto& o) { o.blocks = 4; }, [&] { launch(dim3(4), dim3(32), 0, [] { concurrency_kernel(); }); });
    check(most.load() >= 2, "HDAS_EMU_BLOCKS=4: " + std::to_string(most.load()) + " block(s) ran at once");
  }
  if (checked) {  // the checked build: bounds, poisoned global memory, traffic counts (threads in order)
    hdas::emu::Options o = base;
    o.seed = -1;
    hdas::emu::set_options(o);
    const size_t rz = 256;
    std::vector<float> mem(4096);
    auto aligned = [](float* p) {  // 128-byte aligned, as a GPU allocation is (at least)
      return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 127) & ~uintptr_t(127));
    };
    hdas::emu::poison(mem.data(), mem.size() * sizeof(float));
    float* in = aligned(mem.data() + rz / 4);
    float* out = aligned(in + 200 + rz / 4);
    for (int i = 0; i < 100; ++i) in[i] = static_cast<float>(i);
    hdas::emu::track_allocation(in, 100 * sizeof(float), rz);
    hdas::emu::track_allocation(out, 64 * sizeof(float), rz);
    launch(dim3(1), dim3(32), 0, [&] { copy_kernel(in, out, 32, 3); });  // reads 0, 3, .., 93
    check(out[31] == 93.0f, "checked build: a copy within bounds");
    expect_error("an out-of-bounds read", "out-of-bounds global read of 4 bytes: index 100 (byte offset 400", [&] {
      launch(dim3(1), dim3(64), 0, [&] { copy_kernel(in, out, 64, 2); }, reinterpret_cast<const void*>(&copy_kernel));
    });
    hdas::emu::untrack_allocation(in);
    hdas::emu::track_allocation(in, 200 * sizeof(float), rz);  // 100 .. 199 never written
    expect_error("a read of an unwritten value", "nothing has written since its allocation (poisoned): index 100", [&] {
      launch(dim3(1), dim3(64), 0, [&] { copy_kernel(in, out, 64, 2); });
    });
    // Traffic: 32 lanes reading consecutive floats take 4 sectors, at a stride of 3 floats 12; a
    // float store per lane 4 sectors; shared accesses at a stride of 32 words conflict 32-fold, at 33 not.
    hdas::emu::profile_start();
    launch(dim3(1), dim3(32), 0, [&] { copy_kernel(in, out, 32, 1); });
    launch(dim3(1), dim3(32), 0, [&] { copy_kernel(in, out, 32, 3); });
    launch(dim3(1), dim3(32), 0, [&] { shared_stride_kernel(out, 32); });
    launch(dim3(1), dim3(32), 0, [&] { shared_stride_kernel(out, 33); });
    const std::string prof = hdas::emu::profile_take();
    std::vector<std::string> lines;
    for (size_t a = 0, b; (b = prof.find('\n', a)) != std::string::npos; a = b + 1) lines.push_back(prof.substr(a, b - a));
    auto has = [&](size_t i, const std::string& what) { return i < lines.size() && lines[i].find(what) != std::string::npos; };
    check(lines.size() == 4, "checked build: one traffic line per launch, got " + std::to_string(lines.size()));
    check(has(0, "\"ld\": {\"requests\": 1, \"sectors\": 4, \"bytes\": 128, \"distinct_sectors\": 4}"),
          "traffic of a coalesced load: " + (lines.empty() ? "" : lines[0]));
    check(has(1, "\"ld\": {\"requests\": 1, \"sectors\": 12, \"bytes\": 128"), "traffic of a strided load");
    check(has(0, "\"st\": {\"requests\": 1, \"sectors\": 4, \"bytes\": 128"), "traffic of a coalesced store");
    check(has(2, "\"shared\": {\"requests\": 2, \"wavefronts\": 64, \"ideal\": 2}"),
          "bank conflicts at a stride of 32 words: " + (lines.size() > 2 ? lines[2] : ""));
    check(has(3, "\"shared\": {\"requests\": 2, \"wavefronts\": 2, \"ideal\": 2}"),
          "no bank conflicts at a stride of 33 words: " + (lines.size() > 3 ? lines[3] : ""));
    hdas::emu::untrack_allocation(in);
    hdas::emu::untrack_allocation(out);
    hdas::emu::set_options(base);
  }
  {  // the kernels' 32-bit multiply-shift division against '/', at the edges of every quotient
    bool ok = true;
    std::vector<int32_t> ds;
    for (int32_t d = 1; d <= 4100; ++d) ds.push_back(d);
    for (int32_t d : {65535, 65536, 65537, 1000003, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, INT32_MAX - 1, INT32_MAX})
      ds.push_back(d);
    for (int32_t d : ds) {
      const hdas::cuda::Div<int32_t> div(d);
      const int64_t top = INT32_MAX / d;
      for (int64_t q : {int64_t(0), int64_t(1), int64_t(2), int64_t(7), top - 1, top})
        for (int64_t r : {int64_t(-1), int64_t(0), int64_t(1), int64_t(d) - 1}) {
          const int64_t n = q * d + r;
          if (n < 0 || n > INT32_MAX) continue;
          ok &= div.div(static_cast<int32_t>(n)) == n / d;
        }
      ok &= div.div(INT32_MAX) == INT32_MAX / d;
    }
    check(ok, "Div<int32_t> (multiply-shift) equals integer division");
  }
  std::vector<int> scratch(1024);
  expect_error("divergent shuffle", "deadlock", [&] {
    launch(dim3(1), dim3(32), 0, [p = scratch.data()] { divergent_shuffle_kernel(p); });
  });
  expect_error("shuffle naming an exited lane", "which has exited", [&] {
    launch(dim3(1), dim3(64), 0, [p = scratch.data()] { exited_mask_kernel(p); });
  });
  expect_error("shuffle after half the warp exited", "which has exited", [&] {
    launch(dim3(1), dim3(32), 0, [p = scratch.data()] { half_warp_shuffle_kernel(p); });
  });
  expect_error("shuffle by a lane outside its mask", "outside its mask", [&] {
    launch(dim3(1), dim3(32), 0, [p = scratch.data()] { outside_mask_kernel(p); });
  });
  expect_error("__syncthreads against a shuffle", "deadlock", [&] {
    launch(dim3(2), dim3(64), 0, [p = scratch.data()] { mixed_sync_kernel(p); });
  });
  expect_error("1025 threads", "invalid configuration", [&] { launch(dim3(1), dim3(1025), 0, [] {}); });
  expect_error("empty grid", "invalid configuration", [&] { launch(dim3(0), dim3(32), 0, [] {}); });
  expect_error("64 KiB of dynamic shared memory", "48 KiB", [&] { launch(dim3(1), dim3(32), 65536, [] {}); });
  {  // the pool still works after the errors
    std::vector<int> out(2 * 256);
    launch(dim3(2), dim3(256), 0, [p = out.data()] { barrier_kernel(3, p); });
    bool ok = true;
    for (int b = 0; b < 2; ++b)
      for (int t = 0; t < 256; ++t) ok &= out[b * 256 + t] == (t + 3) % 256 + 3;
    check(ok, "launches after failed ones");
  }
  std::printf("emulator self-test (%s): %s\n", hdas::emu::describe_mode(), failures == 0 ? "all passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
