// The emulator's runtime (see cuda_emu.h): runner threads that each run one block at a time, every
// CUDA thread of the block a fiber on its runner; warp operations and barriers completed by the
// runner's scheduler; shared memory per block; in the checked build, the hooks that check and count
// the kernels' memory accesses.
#include "cuda_emu.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define HDAS_EMU_ASAN 1
#endif
// Under ThreadSanitizer this file is compiled without its instrumentation (build.py defines
// HDAS_EMU_TSAN): the scheduler's own bookkeeping is not the subject, and the happens-before edges
// between CUDA threads are exactly the ones the CUDA memory model gives (annotated below).
#if defined(HDAS_EMU_TSAN)
extern "C" {
void* __tsan_get_current_fiber();
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace hdas::emu {
namespace {

constexpr int kLanes = 32;
#if defined(HDAS_EMU_ASAN) || defined(HDAS_EMU_TSAN)
constexpr size_t kStackBytes = size_t(1) << 20;  // sanitizers' frames are larger
#else
constexpr size_t kStackBytes = size_t(256) << 10;
#endif
constexpr size_t kMaxShared = 48 << 10;  // static + dynamic; more needs cudaFuncSetAttribute on a GPU
#if defined(HDAS_EMU_CHECKED)
constexpr bool kChecked = true;
#else
constexpr bool kChecked = false;
#endif

#include "fiber.h"  // NOLINT: inside the anonymous namespace on purpose

// ---- options, names, random numbers ---------------------------------------------------------------
Options env_options() {
  Options o;
  if (const char* s = std::getenv("HDAS_EMU_SEED"); s != nullptr && *s != '\0') o.seed = std::strtoll(s, nullptr, 10);
  if (const char* s = std::getenv("HDAS_EMU_BLOCKS"); s != nullptr && *s != '\0')
    o.blocks = static_cast<int>(std::strtol(s, nullptr, 10));
  if (const char* s = std::getenv("HDAS_EMU_BARRIER"); s != nullptr && std::string(s) == "relaxed")
    o.strict_barrier = false;
  o.blocks = std::max(1, std::min(o.blocks, 64));
  return o;
}

std::mutex options_m;
Options& options_ref() {
  static Options o = env_options();
  return o;
}

// The demangled name of the function at `fn` (the kernel's template instantiation), from the
// dynamic symbol table.
std::string kernel_name(const void* fn) {
  if (fn == nullptr) return "kernel";
  static std::mutex m;
  static std::unordered_map<const void*, std::string> cache;
  std::lock_guard<std::mutex> lk(m);
  auto it = cache.find(fn);
  if (it != cache.end()) return it->second;
  std::string name;
  Dl_info info{};
  if (dladdr(fn, &info) != 0 && info.dli_sname != nullptr && info.dli_saddr == fn) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    name = status == 0 && d != nullptr ? d : info.dli_sname;
    std::free(d);
    // "void hdas::cuda::apply_kernel<float, float, int>(hdas::cuda::Slots, ...)" -> up to the '('.
    if (name.rfind("void ", 0) == 0) name = name.substr(5);
    int depth = 0;
    for (size_t i = 0; i < name.size(); ++i) {
      depth += name[i] == '<';
      depth -= name[i] == '>';
      if (name[i] == '(' && depth == 0) {
        name.resize(i);
        break;
      }
    }
  } else {
    std::ostringstream s;
    s << "kernel at " << fn;
    name = s.str();
  }
  return cache.emplace(fn, name).first->second;
}

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
struct Rng {
  uint64_t s = 0;
  uint64_t next() { return mix(s++); }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>((next() >> 32) * n >> 32); }
};

// ---- the poison pattern ----------------------------------------------------------------------------
// The byte at address a is kPoison[a & 7]: a NaN for float32/64, float16 and bfloat16 at every
// aligned position (never the canonical NaN a computation gives), and no plausible integer.
constexpr unsigned char kPoison[8] = {0xa5, 0xff, 0xa5, 0xff, 0xa5, 0xff, 0xf5, 0xff};

[[maybe_unused]] bool is_poison(const unsigned char* p, size_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (size_t i = 0; i < n; ++i)
    if (p[i] != kPoison[(a + i) & 7]) return false;
  return true;
}

}  // namespace

void poison(void* p, size_t n) {
  auto* b = static_cast<unsigned char*>(p);
  const auto a = reinterpret_cast<uintptr_t>(b);
  size_t i = 0;
  for (; i < n && ((a + i) & 7) != 0; ++i) b[i] = kPoison[(a + i) & 7];
  uint64_t word;
  std::memcpy(&word, kPoison, 8);
  for (; i + 8 <= n; i += 8) std::memcpy(b + i, &word, 8);
  for (; i < n; ++i) b[i] = kPoison[(a + i) & 7];
}

Options options() {
  std::lock_guard<std::mutex> lk(options_m);
  return options_ref();
}

void set_options(const Options& o) {
  std::lock_guard<std::mutex> lk(options_m);
  options_ref() = o;
  options_ref().blocks = std::max(1, std::min(o.blocks, 64));
}

bool checked_build() { return kChecked; }

namespace {

// ---- tracked global memory (checked build) ---------------------------------------------------------
struct Allocation {
  uintptr_t lo, data, end, hi;  // [lo, data) and [end, hi) are redzones
  uint64_t id;                  // in the order of tracking: tells apart allocations at one address
};

class Allocations {
 public:
  void add(const void* data, size_t bytes, size_t redzone) {
    const auto d = reinterpret_cast<uintptr_t>(data);
    std::unique_lock<std::shared_mutex> lk(m_);
    map_[d - redzone] = Allocation{d - redzone, d, d + bytes, d + bytes + redzone, next_id_++};
  }
  void remove(const void* data) {
    const auto d = reinterpret_cast<uintptr_t>(data);
    std::unique_lock<std::shared_mutex> lk(m_);
    for (auto it = map_.begin(); it != map_.end(); ++it)
      if (it->second.data == d) {
        map_.erase(it);
        break;
      }
    generation_.fetch_add(1, std::memory_order_release);
  }
  // The allocation whose [lo, hi) holds a, or none.
  bool find(uintptr_t a, Allocation& out) {
    thread_local Allocation last{0, 0, 0, 0, 0};
    thread_local uint64_t last_gen = ~uint64_t(0);
    const uint64_t gen = generation_.load(std::memory_order_acquire);
    if (last_gen == gen && a >= last.lo && a < last.hi) {
      out = last;
      return true;
    }
    std::shared_lock<std::shared_mutex> lk(m_);
    auto it = map_.upper_bound(a);
    if (it == map_.begin()) return false;
    --it;
    if (a >= it->second.hi) return false;
    last = out = it->second;
    last_gen = gen;
    return true;
  }

 private:
  std::shared_mutex m_;
  std::map<uintptr_t, Allocation> map_;
  std::atomic<uint64_t> generation_{0};
  uint64_t next_id_ = 0;
};

Allocations& allocations() {
  static Allocations* a = new Allocations;  // outlives every static tensor
  return *a;
}

}  // namespace

void track_allocation(const void* data, size_t bytes, size_t redzone) { allocations().add(data, bytes, redzone); }
void untrack_allocation(const void* data) { allocations().remove(data); }

namespace {

#include "traffic.h"  // NOLINT: inside the anonymous namespace on purpose

std::atomic<bool> profiling{false};
std::mutex profile_m;
std::string profile_lines;

// ---- a launch, its blocks, their threads -------------------------------------------------------------
enum class LaneState { kRunning, kWaitWarp, kWaitBlock, kHandshake, kDone, kFailed };

struct Launch {
  void (*invoke)(const void*) = nullptr;
  const void* closure = nullptr;
  std::string name;
  dim3 grid, block;
  int threads = 0;
  size_t dynamic_smem = 0;
  Options opts;
  uint64_t key = 0;  // the kernel's name hashed: its interleavings depend on the seed, not on what ran before
  uint64_t total = 0, stride = 1, offset = 0;  // block b runs as (b * stride + offset) % total
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex m;
  std::string error;
  Traffic traffic;
  void fail(const std::string& what) {
    std::lock_guard<std::mutex> lk(m);
    if (error.empty()) error = what;
    failed = true;
  }
};

struct Runner;

struct Lane {
  ThreadView view;
  Context ctx;
  Stack stack;
  Runner* runner = nullptr;
  int index = 0;  // thread index in the block
  LaneState state = LaneState::kDone;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
  std::vector<Access> accesses;  // checked build, while profiling
#ifdef HDAS_EMU_TSAN
  void* tsan_fiber = nullptr;
  struct Group* group = nullptr;  // the barrier instance this lane passes (handshake below)
#endif
};

#ifdef HDAS_EMU_TSAN
// A completed __syncwarp or __syncthreads under ThreadSanitizer: every member releases into `sync`,
// then, once all have, every member acquires it (a fresh object per instance, so nothing of a later
// barrier leaks into an earlier one).
struct Group {
  std::vector<Lane*> members;
  int released = 0, acquired = 0;
  char* sync = new char;
  ~Group() { delete sync; }
};
#endif

struct BlockError {
  std::string what;
};

thread_local Lane* current_lane = nullptr;
thread_local Runner* current_runner = nullptr;

void lane_main(void* p);
const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kSync: return "__syncwarp";
    case WarpOp::kShflIdx: return "__shfl_sync";
    case WarpOp::kShflUp: return "__shfl_up_sync";
    case WarpOp::kShflDown: return "__shfl_down_sync";
    case WarpOp::kShflXor: return "__shfl_xor_sync";
    case WarpOp::kBallot: return "__ballot_sync";
  }
  return "?";
}

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// One runner thread: runs blocks, each from its start to its end, its threads as fibers.
struct Runner {
  int id = 0;
  std::thread thread;
  Context sched;
  std::vector<std::unique_ptr<Lane>> lanes;
  Launch* launch = nullptr;
  uint3 block_idx;
  int threads = 0;
  Rng rng;
  bool shuffle = false;
  // Shared memory: the dynamic part at the start, then each HDAS_SHARED array as first reached.
  std::unique_ptr<unsigned char[]> arena;
  unsigned char* smem = nullptr;  // 16-byte aligned start of the arena
  size_t smem_used = 0, dynamic = 0;
  std::vector<std::pair<const void*, size_t>> statics;  // (tag, offset)
  std::string lane_error;
  Traffic traffic;
#ifdef HDAS_EMU_ASAN
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
#endif
#ifdef HDAS_EMU_TSAN
  void* tsan_sched = nullptr;
  std::vector<std::unique_ptr<unsigned char[]>> used_arenas;
#endif

  void new_arena() {
    arena.reset(new unsigned char[kMaxShared + 16]);
    smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(arena.get()) + 15) & ~uintptr_t(15));
  }

  void make_lane(Lane& l) {
#ifdef HDAS_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(l.stack.base, l.stack.size);
#endif
#ifdef HDAS_EMU_TSAN
    if (l.tsan_fiber) __tsan_destroy_fiber(l.tsan_fiber);
    l.tsan_fiber = __tsan_create_fiber(0);
#endif
    make_context(l.ctx, l.stack.base, l.stack.size, &lane_main, &l);
  }

#ifdef HDAS_EMU_TSAN
  // The runner acquires everything its threads did (at a launch's end, before freeing memory they
  // used): a ThreadSanitizer fiber switch is bookkeeping only, so this switches to each thread's
  // fiber and back, synchronising, without running it.
  void absorb_lanes() {
    for (auto& l : lanes) {
      __tsan_switch_to_fiber(l->tsan_fiber, 1);
      __tsan_switch_to_fiber(tsan_sched, 0);
    }
    used_arenas.clear();
  }
#endif

  // After an error: the threads' fibers start afresh (those of the failed block stopped mid-way).
  void reset_lanes() {
#ifdef HDAS_EMU_TSAN
    absorb_lanes();
#endif
    for (auto& l : lanes) make_lane(*l);
  }

  void ensure_lanes(int n) {
    while (static_cast<int>(lanes.size()) < n) {
      auto l = std::make_unique<Lane>();
      l->runner = this;
      l->index = static_cast<int>(lanes.size());
      make_lane(*l);
      lanes.push_back(std::move(l));
    }
  }

  // Scheduler -> lane, back when the lane waits, finishes, fails or is preempted.
  void resume(Lane& l) {
    current_lane = &l;
    current_view = &l.view;
#ifdef HDAS_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, l.stack.base, l.stack.size);
#endif
#ifdef HDAS_EMU_TSAN
    __tsan_switch_to_fiber(l.tsan_fiber, 0);  // the lane sees what its runner did before
#endif
    swap_context(sched, l.ctx);
#ifdef HDAS_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    current_lane = nullptr;
    current_view = nullptr;
  }

  static std::string where(const Lane& l) {
    std::ostringstream s;
    switch (l.state) {
      case LaneState::kDone: s << "exited"; break;
      case LaneState::kWaitBlock: s << "at __syncthreads"; break;
      case LaneState::kWaitWarp: s << "at " << op_name(l.op) << ", mask 0x" << std::hex << l.mask; break;
      case LaneState::kRunning: s << "running"; break;
      case LaneState::kHandshake: s << "passing a barrier"; break;
      case LaneState::kFailed: s << "failed"; break;
    }
    return s.str();
  }

  // Where threads [lo, hi) are, runs of threads in the same place on one line each.
  std::string describe(int lo, int hi, const char* unit) const {
    std::ostringstream s;
    for (int i = lo; i < hi;) {
      const std::string w = where(*lanes[i]);
      int j = i + 1;
      while (j < hi && where(*lanes[j]) == w) ++j;
      s << "\n  " << unit << " " << i - lo << "-" << j - 1 - lo << ": " << w;
      i = j;
    }
    return s.str();
  }

  std::string block_text() const {
    return "kernel " + launch->name + ", block " + dims(dim3(block_idx.x, block_idx.y, block_idx.z));
  }

  [[noreturn]] void warp_error(int warp, const std::string& what) const {
    const int lo = warp * kLanes, hi = std::min(threads, lo + kLanes);
    throw BlockError{"emulated CUDA: " + what + " (" + block_text() + ", warp " + std::to_string(warp) + ")" +
                     describe(lo, hi, "lanes")};
  }
  [[noreturn]] void block_error(const std::string& what) const {
    throw BlockError{"emulated CUDA: " + what + " (" + block_text() + ")" + describe(0, threads, "threads")};
  }

  // Completes every warp operation of warp `warp` whose mask lanes all wait on it; true if any did.
  bool complete_warp_ops(int warp) {
    const int first = warp * kLanes, n = std::min(kLanes, threads - first);
    auto L = [&](int j) -> Lane* { return lanes[first + j].get(); };
    for (int i = 0; i < n; ++i) {  // each waiting lane's own mask first: the call itself is wrong
      const Lane& l = *L(i);
      if (l.state != LaneState::kWaitWarp) continue;
      if (!(l.mask >> i & 1u)) warp_error(warp, std::string(op_name(l.op)) + " by a lane outside its mask");
      if (n < kLanes && (l.mask >> n) != 0)
        warp_error(warp, std::string(op_name(l.op)) + " names lanes this warp lacks");
    }
    bool progress = false;
    for (int i = 0; i < n; ++i) {
      Lane& l = *L(i);
      if (l.state != LaneState::kWaitWarp) continue;
      const unsigned m = l.mask;
      bool ready = true;
      for (int j = 0; j < n; ++j) {
        if (!(m >> j & 1u)) continue;
        const Lane& o = *L(j);
        if (o.state == LaneState::kDone)
          warp_error(warp, std::string(op_name(l.op)) + " names lane " + std::to_string(j) + ", which has exited");
        if (o.state != LaneState::kWaitWarp || o.op != l.op || o.mask != m) ready = false;
      }
      if (!ready) continue;
      uint64_t ballot = 0;
      for (int j = 0; j < n; ++j)
        if ((m >> j & 1u) && L(j)->value != 0) ballot |= uint64_t(1) << j;
      for (int j = 0; j < n; ++j) {
        if (!(m >> j & 1u)) continue;
        Lane& o = *L(j);
        const int w = o.width;
        if (w <= 0 || w > kLanes || (w & (w - 1)) != 0)
          warp_error(warp, std::string(op_name(o.op)) + " with a width that is not a power of 2 up to 32");
        const int seg = j & ~(w - 1), pos = j & (w - 1);
        int src = j;
        switch (o.op) {
          case WarpOp::kSync: break;
          case WarpOp::kBallot: break;
          case WarpOp::kShflIdx: src = seg + (o.arg & (w - 1)); break;
          case WarpOp::kShflUp: src = pos >= o.arg ? j - o.arg : j; break;
          case WarpOp::kShflDown: src = pos + o.arg < w ? j + o.arg : j; break;
          case WarpOp::kShflXor: src = (j ^ o.arg) < seg + w ? (j ^ o.arg) : j; break;
        }
        if (src < 0 || src >= n || !(m >> src & 1u))
          warp_error(warp, std::string(op_name(o.op)) + " reads lane " + std::to_string(src) + ", outside the mask");
        o.result = o.op == WarpOp::kBallot ? ballot : L(src)->value;
      }
#ifdef HDAS_EMU_TSAN
      Group* g = l.op == WarpOp::kSync ? new Group : nullptr;  // only __syncwarp orders memory
#endif
      for (int j = 0; j < n; ++j)
        if (m >> j & 1u) {
          L(j)->state = LaneState::kRunning;
#ifdef HDAS_EMU_TSAN
          L(j)->group = g;
          if (g) g->members.push_back(L(j));
#endif
        }
      progress = true;
    }
    return progress;
  }

  // The accesses of every warp whose live lanes all wait (checked build, while profiling).
  void count_traffic(bool all) {
    std::vector<std::vector<Access>*> v;
    for (int w = 0; w * kLanes < threads; ++w) {
      const int lo = w * kLanes, hi = std::min(threads, lo + kLanes);
      bool waiting = true, any = false;
      for (int i = lo; i < hi; ++i) {
        waiting &= lanes[i]->state != LaneState::kRunning;
        any |= !lanes[i]->accesses.empty();
      }
      if (!any || !(waiting || all)) continue;
      v.clear();
      for (int i = lo; i < hi; ++i) v.push_back(&lanes[i]->accesses);
      count_requests(v, traffic);
    }
  }

  void run_block(uint64_t b) {
    Launch& L = *launch;
    const dim3 g = L.grid;
    block_idx = uint3(static_cast<unsigned>(b % g.x), static_cast<unsigned>(b / g.x % g.y),
                      static_cast<unsigned>(b / (uint64_t(g.x) * g.y)));
    threads = L.threads;
    ensure_lanes(threads);
    shuffle = L.opts.seed >= 0;
    rng.s = mix(mix(static_cast<uint64_t>(L.opts.seed)) ^ mix(L.key + b));  // reproducible per kernel and block
#ifdef HDAS_EMU_TSAN
    // Fresh shared memory per block: nothing orders one block's threads before the next block's on
    // this runner (but a thread's own program order: a fiber serves the same thread index of every
    // block). The old arenas are freed once the runner has acquired what their threads did.
    used_arenas.push_back(std::move(arena));
    if (used_arenas.size() >= 64) absorb_lanes();
    new_arena();
#endif
    dynamic = L.dynamic_smem;
    smem_used = (dynamic + 15) & ~size_t(15);
    statics.clear();
    poison(smem, dynamic);
    const dim3 bd = L.block;
    for (int i = 0; i < threads; ++i) {
      const unsigned t = static_cast<unsigned>(i);
      Lane& l = *lanes[i];
      l.view = ThreadView{uint3(t % bd.x, t / bd.x % bd.y, t / (bd.x * bd.y)), block_idx, bd, g};
      l.state = LaneState::kRunning;
      l.accesses.clear();
    }
    std::vector<int> order;
    order.reserve(threads);
    const int warps = (threads + kLanes - 1) / kLanes;
    for (;;) {
      order.clear();
      for (int i = 0; i < threads; ++i)
        if (lanes[i]->state == LaneState::kRunning) order.push_back(i);
      if (shuffle)
        for (int i = static_cast<int>(order.size()) - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
      for (int i : order) {
        Lane& l = *lanes[i];
        if (l.state != LaneState::kRunning) continue;  // released by another lane meanwhile (handshake)
        resume(l);
        if (l.state == LaneState::kFailed) throw BlockError{lane_error};
      }
      if (kChecked && profiling.load(std::memory_order_relaxed)) count_traffic(false);
      bool progress = false, running = false;
      for (int w = 0; w < warps; ++w) progress |= complete_warp_ops(w);
      int done = 0, at_block = 0;
      for (int i = 0; i < threads; ++i) {
        const LaneState s = lanes[i]->state;
        done += s == LaneState::kDone;
        at_block += s == LaneState::kWaitBlock;
        running |= s == LaneState::kRunning;
      }
      if (progress || running) continue;
      if (done == threads) break;
      if (done + at_block == threads) {
        if (L.opts.strict_barrier && done > 0)
          block_error("__syncthreads reached by " + std::to_string(at_block) + " of the block's " +
                      std::to_string(threads) + " threads; the others have exited");
#ifdef HDAS_EMU_TSAN
        Group* grp = new Group;
#endif
        for (int i = 0; i < threads; ++i)
          if (lanes[i]->state == LaneState::kWaitBlock) {
            lanes[i]->state = LaneState::kRunning;
#ifdef HDAS_EMU_TSAN
            lanes[i]->group = grp;
            grp->members.push_back(lanes[i].get());
#endif
          }
        continue;
      }
      int stuck = 0;
      for (int w = 0; w < warps && stuck == 0; ++w)
        for (int i = w * kLanes; i < std::min(threads, (w + 1) * kLanes); ++i)
          if (lanes[i]->state == LaneState::kWaitWarp) stuck = w + 1;
      if (stuck > 0)
        warp_error(stuck - 1, "deadlock: lanes wait at warp operations no other lane can join");
      block_error("deadlock: threads wait where no other thread can join them");
    }
    if (kChecked && profiling.load(std::memory_order_relaxed)) count_traffic(true);
  }

  void run_launch(Launch& L) {
    launch = &L;
    current_runner = this;
    try {
      for (;;) {
        if (L.failed.load(std::memory_order_relaxed)) break;
        const uint64_t k = L.next.fetch_add(1, std::memory_order_relaxed);
        if (k >= L.total) break;
        run_block((k * L.stride + L.offset) % L.total);
      }
    } catch (const BlockError& e) {
      L.fail(e.what);
      reset_lanes();
    } catch (const std::exception& e) {
      L.fail(std::string("emulated CUDA: ") + e.what());
      reset_lanes();
    }
#ifdef HDAS_EMU_TSAN
    absorb_lanes();
#endif
    if (kChecked && profiling.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lk(L.m);
      L.traffic.merge(traffic);
    }
    current_runner = nullptr;
    launch = nullptr;
  }
};

// Lane -> scheduler.
void yield_lane(Lane& l) {
  Runner& r = *l.runner;
#ifdef HDAS_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, r.sched_bottom, r.sched_size);
#endif
#ifdef HDAS_EMU_TSAN
  __tsan_switch_to_fiber(r.tsan_sched, 1 /* no sync: the runner learns nothing from its threads */);
#endif
  swap_context(l.ctx, r.sched);
#ifdef HDAS_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &r.sched_bottom, &r.sched_size);
#endif
}

#ifdef HDAS_EMU_TSAN
// After a __syncwarp or __syncthreads completes: the handshake of Group.
void pass_group(Lane& l) {
  Group* g = l.group;
  if (g == nullptr) return;
  l.group = nullptr;
  __tsan_release(g->sync);
  if (++g->released == static_cast<int>(g->members.size())) {
    for (Lane* m : g->members)
      if (m != &l) m->state = LaneState::kRunning;
  } else {
    l.state = LaneState::kHandshake;
    yield_lane(l);
  }
  __tsan_acquire(g->sync);
  if (++g->acquired == static_cast<int>(g->members.size())) delete g;
}
#endif

[[noreturn]] void fail_lane(Lane& l, const std::string& what) {
  l.runner->lane_error = what;
  l.state = LaneState::kFailed;
  yield_lane(l);
  std::abort();  // never resumed
}

void lane_main(void* p) {
  Lane& l = *static_cast<Lane*>(p);
#ifdef HDAS_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &l.runner->sched_bottom, &l.runner->sched_size);
#endif
  for (;;) {
    Launch& L = *l.runner->launch;
    L.invoke(L.closure);
    l.state = LaneState::kDone;
    yield_lane(l);
  }
}

// The runner threads, started on first use and reused by every launch.
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    start_.notify_all();
    for (auto& r : runners_) r->thread.join();
  }

  void run(Launch& L, int n) {
    while (static_cast<int>(runners_.size()) < n) add_runner();
    {
      std::lock_guard<std::mutex> lk(m_);
      launch_ = &L;
      active_ = n;
      pending_ = n;
      ++generation_;
    }
    start_.notify_all();
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [&] { return pending_ == 0; });
  }

 private:
  void add_runner() {
    auto r = std::make_unique<Runner>();
    r->id = static_cast<int>(runners_.size());
    r->new_arena();
    Runner* raw = r.get();
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lk(m_);
      seen = generation_;
    }
    r->thread = std::thread([this, raw, seen] { loop(*raw, seen); });
    runners_.push_back(std::move(r));
  }

  void loop(Runner& r, uint64_t seen) {
#ifdef HDAS_EMU_TSAN
    r.tsan_sched = __tsan_get_current_fiber();
#endif
    for (;;) {
      Launch* L;
      {
        std::unique_lock<std::mutex> lk(m_);
        start_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        // Decided here, under the lock: a runner this launch does not use may wake after the launch
        // has finished and its Launch is gone.
        if (r.id >= active_) continue;
        L = launch_;
      }
      r.run_launch(*L);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex m_;
  std::condition_variable start_, done_;
  std::vector<std::unique_ptr<Runner>> runners_;
  Launch* launch_ = nullptr;
  uint64_t generation_ = 0;
  int active_ = 0, pending_ = 0;
  bool stop_ = false;
};

Lane& lane_or_die(const char* what) {
  if (current_lane == nullptr) {
    std::fprintf(stderr, "emulated CUDA: %s called outside a kernel\n", what);
    std::abort();
  }
  return *current_lane;
}

uint64_t gcd(uint64_t a, uint64_t b) {
  while (b != 0) a = std::exchange(b, a % b);
  return a;
}

}  // namespace

const char* describe_mode() {
  static std::string s;
  const Options o = options();
  s = std::string(kChecked ? "checked build (poison and bounds checks, traffic counts)" : "plain build") +
      ", threads " + (o.seed < 0 ? "in order" : "interleaved with seed " + std::to_string(o.seed)) + ", " +
      std::to_string(o.blocks) + " block(s) at once, " + (o.strict_barrier ? "strict" : "relaxed") + " barriers";
  return s.c_str();
}

void launch_erased(dim3 grid, dim3 block, size_t dynamic_smem, void (*invoke)(const void*), const void* closure,
                   const void* kernel) {
  static std::mutex launch_m;  // one launch at a time
  static Pool pool;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.x > 2147483647u || grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535)
    throw std::runtime_error("emulated CUDA: invalid configuration argument: grid " + dims(grid) + ", block " +
                             dims(block));
  if (dynamic_smem > kMaxShared)
    throw std::runtime_error("emulated CUDA: " + std::to_string(dynamic_smem) +
                             " bytes of dynamic shared memory exceed the 48 KiB a launch gets by default");
  std::lock_guard<std::mutex> lk(launch_m);
  Launch L;
  L.invoke = invoke;
  L.closure = closure;
  L.name = kernel_name(kernel);
  L.grid = grid;
  L.block = block;
  L.threads = static_cast<int>(threads);
  L.dynamic_smem = dynamic_smem;
  L.opts = options();
  L.key = std::hash<std::string>()(L.name);
  L.total = uint64_t(grid.x) * grid.y * grid.z;
  if (L.opts.seed >= 0 && L.total > 1) {  // the blocks in a seeded order too
    Rng r{mix(static_cast<uint64_t>(L.opts.seed) ^ mix(L.key))};
    do L.stride = 1 + r.next() % (L.total - 1);
    while (gcd(L.stride, L.total) != 1);
    L.offset = r.next() % L.total;
  }
  pool.run(L, static_cast<int>(std::min<uint64_t>(L.opts.blocks, L.total)));
  if (L.failed) throw std::runtime_error(L.error);
  if (kChecked && profiling.load()) {
    uint64_t ld[3] = {}, st[3] = {}, sh[3] = {};  // requests, sectors or wavefronts, bytes or ideal
    std::ostringstream s;
    s << "{\"kernel\": \"" << L.name << "\", \"grid\": [" << grid.x << ", " << grid.y << ", " << grid.z
      << "], \"block\": [" << block.x << ", " << block.y << ", " << block.z << "], \"sites\": [";
    bool first = true;
    for (const auto& [pc, t] : L.traffic.sites) {
      Dl_info info{};
      uintptr_t off = pc;
      if (dladdr(reinterpret_cast<void*>(pc), &info) != 0) off = pc - reinterpret_cast<uintptr_t>(info.dli_fbase);
      s << (first ? "" : ", ") << "{\"pc\": " << off << ", \"kind\": \""
        << (t.shared ? (t.store ? "shared_st" : "shared_ld") : (t.store ? "st" : "ld")) << "\", \"requests\": "
        << t.requests << ", \"sectors\": " << t.sectors << ", \"bytes\": " << t.bytes
        << ", \"wavefronts\": " << t.wavefronts << ", \"ideal\": " << t.ideal << "}";
      first = false;
      uint64_t* acc = t.shared ? sh : (t.store ? st : ld);
      acc[0] += t.requests;
      acc[1] += t.shared ? t.wavefronts : t.sectors;
      acc[2] += t.shared ? t.ideal : t.bytes;
    }
    uint64_t ld_distinct = 0, st_distinct = 0;
    s << "], \"allocs\": [";
    first = true;
    for (const auto& [base, a] : L.traffic.allocs) {
      s << (first ? "" : ", ") << "{\"id\": " << base << ", \"bytes\": " << a.bytes << ", \"ld_sectors\": " << a.load.size()
        << ", \"st_sectors\": " << a.store.size() << "}";
      first = false;
      ld_distinct += a.load.size();
      st_distinct += a.store.size();
    }
    s << "], \"ld\": {\"requests\": " << ld[0] << ", \"sectors\": " << ld[1] << ", \"bytes\": " << ld[2]
      << ", \"distinct_sectors\": " << ld_distinct << "}, \"st\": {\"requests\": " << st[0]
      << ", \"sectors\": " << st[1] << ", \"bytes\": " << st[2]
      << ", \"distinct_sectors\": " << st_distinct << "}, \"shared\": {\"requests\": " << sh[0]
      << ", \"wavefronts\": " << sh[1] << ", \"ideal\": " << sh[2] << "}}\n";
    std::lock_guard<std::mutex> plk(profile_m);
    profile_lines += s.str();
  }
}

void profile_start() {
  std::lock_guard<std::mutex> lk(profile_m);
  profile_lines.clear();
  profiling = kChecked;
}

std::string profile_take() {
  std::lock_guard<std::mutex> lk(profile_m);
  profiling = false;
  return std::exchange(profile_lines, std::string());
}

void* dynamic_shared() {
  Lane& l = lane_or_die("dynamic shared memory");
  return l.runner->smem;
}

void* static_shared(const void* tag, size_t bytes, size_t align) {
  Lane& l = lane_or_die("static shared memory");
  Runner& r = *l.runner;
  for (const auto& [t, off] : r.statics)
    if (t == tag) return r.smem + off;
  const size_t a = std::max<size_t>(align, 16);
  const size_t off = (r.smem_used + a - 1) / a * a;
  if (off + bytes > kMaxShared)
    fail_lane(l, "emulated CUDA: " + std::to_string(off + bytes) + " bytes of shared memory (static and dynamic) "
                 "exceed the 48 KiB a block gets by default (" + r.block_text() + ")");
  poison(r.smem + off, bytes);
  r.statics.emplace_back(tag, off);
  r.smem_used = off + bytes;
  return r.smem + off;
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
  Lane& l = lane_or_die(op_name(op));
  l.state = LaneState::kWaitWarp;
  l.op = op;
  l.mask = mask;
  l.value = value;
  l.arg = arg;
  l.width = width;
  yield_lane(l);
#ifdef HDAS_EMU_TSAN
  pass_group(l);
#endif
  return l.result;
}

void syncthreads() {
  Lane& l = lane_or_die("__syncthreads");
  l.state = LaneState::kWaitBlock;
  yield_lane(l);
#ifdef HDAS_EMU_TSAN
  pass_group(l);
#endif
}

unsigned active_mask() {
  Lane& l = lane_or_die("__activemask");
  const Runner& r = *l.runner;
  const int first = l.index / kLanes * kLanes;
  unsigned m = 0;
  for (int i = 0; i < kLanes && first + i < r.threads; ++i)
    if (r.lanes[first + i]->state != LaneState::kDone) m |= 1u << i;
  return m;
}

// ---- the checked build's hooks ---------------------------------------------------------------------------
// build.py --checked compiles the kernels' translation units with GCC's kernel-address
// instrumentation in its out-of-line form (-fsanitize=kernel-address, call threshold 0): every load
// and store the compiler cannot prove to be to a local variable calls __asan_{load,store}N_noabort
// below (this file itself is not instrumented). Outside a kernel they return at once.
#if defined(HDAS_EMU_CHECKED)
namespace {

std::string thread_text(const Lane& l) {
  const ThreadView& v = l.view;
  return l.runner->block_text() + ", thread " + dims(dim3(v.thread_idx.x, v.thread_idx.y, v.thread_idx.z));
}

std::string index_text(uintptr_t a, uintptr_t base, size_t size) {
  const auto off = static_cast<int64_t>(a) - static_cast<int64_t>(base);
  std::ostringstream s;
  s << "index " << (off >= 0 ? off / static_cast<int64_t>(size) : -((-off + size - 1) / size)) << " (byte offset "
    << off << ", " << size << "-byte elements)";
  return s.str();
}

void on_access(uintptr_t a, size_t size, bool store, uintptr_t pc) {
  Lane* lp = current_lane;
  if (lp == nullptr || size == 0) return;
  Lane& l = *lp;
  Runner& r = *l.runner;
  const auto stack = reinterpret_cast<uintptr_t>(l.stack.base);
  if (a >= stack && a < stack + l.stack.size) return;  // the thread's own locals
  const char* rw = store ? "write" : "read";
  const auto smem = reinterpret_cast<uintptr_t>(r.smem);
  bool shared = false;
  uintptr_t base = 0;
  uint64_t alloc_bytes = 0;
  if (a + size > smem && a < smem + kMaxShared) {
    if (a < smem || a + size > smem + r.smem_used)
      fail_lane(l, "emulated CUDA: out-of-bounds shared memory " + std::string(rw) + " of " + std::to_string(size) +
                       " bytes: " + index_text(a, smem, size) + " of the block's " + std::to_string(r.smem_used) +
                       " bytes in use (" + thread_text(l) + ")");
    if (!store && is_poison(reinterpret_cast<const unsigned char*>(a), size)) {
      std::string what = "dynamic shared memory, " + index_text(a, smem, size);
      for (const auto& [tag, off] : r.statics)
        if (a >= smem + off) what = "a static shared array (HDAS_SHARED), " + index_text(a, smem + off, size);
      fail_lane(l, "emulated CUDA: read of shared memory no thread of the block has written (poisoned): " + what +
                       " (" + thread_text(l) + ")");
    }
    shared = true;
  } else {
    Allocation al;
    if (!allocations().find(a, al)) return;  // not global memory (kernel parameters, the emulator's own)
    if (a < al.data || a + size > al.end)
      fail_lane(l, "emulated CUDA: out-of-bounds global " + std::string(rw) + " of " + std::to_string(size) +
                       " bytes: " + index_text(a, al.data, size) + " of an allocation of " +
                       std::to_string(al.end - al.data) + " bytes (" + thread_text(l) + ")");
    if (!store && is_poison(reinterpret_cast<const unsigned char*>(a), size))
      fail_lane(l, "emulated CUDA: read of a global value nothing has written since its allocation (poisoned): " +
                       index_text(a, al.data, size) + " of an allocation of " + std::to_string(al.end - al.data) +
                       " bytes (" + thread_text(l) + ")");
    base = al.id;
    alloc_bytes = al.end - al.data;
  }
  if (profiling.load(std::memory_order_relaxed))
    l.accesses.push_back(Access{pc, a, base, alloc_bytes, static_cast<uint32_t>(size), store, shared});
  if (r.shuffle && (r.rng.next() & 3) == 0) yield_lane(l);  // preempted: another thread runs first
}

}  // namespace

extern "C" {
#define HDAS_EMU_HOOKS(n)                                                                                   \
  __attribute__((visibility("default"))) void __asan_load##n##_noabort(uintptr_t a) {                      \
    on_access(a, n, false, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));                       \
  }                                                                                                         \
  __attribute__((visibility("default"))) void __asan_store##n##_noabort(uintptr_t a) {                     \
    on_access(a, n, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));                        \
  }
HDAS_EMU_HOOKS(1)
HDAS_EMU_HOOKS(2)
HDAS_EMU_HOOKS(4)
HDAS_EMU_HOOKS(8)
HDAS_EMU_HOOKS(16)
#undef HDAS_EMU_HOOKS
__attribute__((visibility("default"))) void __asan_loadN_noabort(uintptr_t a, size_t n) {
  on_access(a, n, false, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}
__attribute__((visibility("default"))) void __asan_storeN_noabort(uintptr_t a, size_t n) {
  on_access(a, n, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}
__attribute__((visibility("default"))) void __asan_handle_no_return() {}
__attribute__((visibility("default"))) void __asan_before_dynamic_init(const char*) {}
__attribute__((visibility("default"))) void __asan_after_dynamic_init() {}
}
#endif

}  // namespace hdas::emu
