// The emulator's runtime (see cuda_emu.h): a persistent pool of warp threads, each running its 32
// lanes as fibers, a block barrier across the warps, and launches that run every block.
#include "cuda_emu.h"

#include <sys/mman.h>

#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define HDAS_EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
extern "C" {
void* __tsan_get_current_fiber();
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
}
#define HDAS_EMU_TSAN 1
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
constexpr size_t kMaxDynamicSmem = 48 << 10;  // more needs cudaFuncSetAttribute on a GPU

// ---- fibers -------------------------------------------------------------------------------------
#if defined(__x86_64__)
// Saves the callee-saved registers, the SSE and x87 control words and the stack pointer of the
// running context in *save_sp, and continues the context whose stack pointer is load_sp.
extern "C" void hdas_emu_switch(void** save_sp, void* load_sp);
// A new context's first instruction: calls r13(r12) on its own, 16-byte aligned stack.
extern "C" void hdas_emu_start();
asm(R"(
    .text
    .p2align 4
    .globl hdas_emu_switch
    .hidden hdas_emu_switch
    .type hdas_emu_switch,@function
hdas_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size hdas_emu_switch,.-hdas_emu_switch

    .p2align 4
    .globl hdas_emu_start
    .hidden hdas_emu_start
    .type hdas_emu_start,@function
hdas_emu_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size hdas_emu_start,.-hdas_emu_start
)");

struct Context {
  void* sp = nullptr;
};

void make_context(Context& c, char* stack, size_t size, void (*fn)(void*), void* arg) {
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top - 80);  // the frame hdas_emu_switch pops
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  slot[0] = mxcsr | (uint64_t(fcw) << 32);
  slot[1] = slot[2] = 0;                             // r15, r14
  slot[3] = reinterpret_cast<uint64_t>(fn);          // r13
  slot[4] = reinterpret_cast<uint64_t>(arg);         // r12
  slot[5] = slot[6] = 0;                             // rbx, rbp
  slot[7] = reinterpret_cast<uint64_t>(&hdas_emu_start);  // returned to; rsp is then 16-byte aligned
  c.sp = slot;
}

inline void swap_context(Context& from, Context& to) { hdas_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};

void (*start_fn)(void*);
void start_trampoline(unsigned hi, unsigned lo) {
  start_fn(reinterpret_cast<void*>((uintptr_t(hi) << 32) | lo));
  __builtin_trap();
}

void make_context(Context& c, char* stack, size_t size, void (*fn)(void*), void* arg) {
  start_fn = fn;
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  const auto a = reinterpret_cast<uintptr_t>(arg);
  makecontext(&c.uc, reinterpret_cast<void (*)()>(start_trampoline), 2, unsigned(a >> 32), unsigned(a));
}

inline void swap_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// A fiber stack with an inaccessible guard page below it (an overflow faults instead of writing
// into the next stack).
struct Stack {
  char* base = nullptr;  // usable region [base, base + size)
  size_t size = 0;
  Stack() {
    const size_t page = 4096;
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("emulated CUDA: cannot map a fiber stack");
    mprotect(p, page, PROT_NONE);
    base = static_cast<char*>(p) + page;
    size = kStackBytes;
  }
  ~Stack() { munmap(base - 4096, size + 4096); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
};

// ---- a block's barrier across its warps ---------------------------------------------------------
class BlockBarrier {
 public:
  void reset(int warps) {
    expected_ = warps;
    arrived_ = 0;
    aborted_ = false;
  }
  // False when the block was aborted (an error in another warp).
  bool arrive_and_wait() {
    std::unique_lock<std::mutex> lk(m_);
    if (aborted_) return false;
    const uint64_t gen = gen_;
    if (++arrived_ == expected_) {
      release();
      return true;
    }
    cv_.wait(lk, [&] { return gen_ != gen || aborted_; });
    return !aborted_;
  }
  // A warp whose lanes have all exited: the others no longer wait for it (exited threads count as
  // arrived, as on the GPU).
  void leave() {
    std::lock_guard<std::mutex> lk(m_);
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) release();
  }
  void abort() {
    std::lock_guard<std::mutex> lk(m_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  void release() {
    arrived_ = 0;
    ++gen_;
    cv_.notify_all();
  }
  std::mutex m_;
  std::condition_variable cv_;
  int expected_ = 0, arrived_ = 0;
  uint64_t gen_ = 0;
  bool aborted_ = false;
};

// ---- the current block ----------------------------------------------------------------------------
struct Job {
  void (*invoke)(const void*) = nullptr;
  const void* closure = nullptr;
  dim3 grid, block;
  uint3 block_idx;
  int threads = 0, warps = 0;
  std::vector<unsigned char> dynamic_smem;
  BlockBarrier barrier;
  std::mutex error_m;
  std::string error;
  void fail(const std::string& what) {
    {
      std::lock_guard<std::mutex> lk(error_m);
      if (error.empty()) error = what;
    }
    barrier.abort();
  }
};

struct Aborted {};  // another warp failed; this one stops too

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

struct Worker;

enum class LaneState { kRunning, kWaitWarp, kWaitBlock, kDone };

struct Lane {
  ThreadView view;
  Context ctx;
  Stack stack;
  Worker* worker = nullptr;
  int index = 0;
  LaneState state = LaneState::kDone;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
#ifdef HDAS_EMU_TSAN
  void* tsan_fiber = nullptr;
#endif
};

thread_local Lane* current_lane = nullptr;
thread_local Job* current_job = nullptr;

void lane_main(void* p);

// One warp: an OS thread that runs its lanes as fibers.
struct Worker {
  int warp = 0;
  Context sched;
  Lane lanes[kLanes];
  std::thread thread;
#ifdef HDAS_EMU_ASAN
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
#endif
#ifdef HDAS_EMU_TSAN
  void* tsan_sched = nullptr;
#endif

  void reset_lanes() {
    for (int i = 0; i < kLanes; ++i) {
      Lane& l = lanes[i];
      l.worker = this;
      l.index = i;
#ifdef HDAS_EMU_ASAN
      ASAN_UNPOISON_MEMORY_REGION(l.stack.base, l.stack.size);
#endif
#ifdef HDAS_EMU_TSAN
      if (l.tsan_fiber) __tsan_destroy_fiber(l.tsan_fiber);
      l.tsan_fiber = __tsan_create_fiber(0);
#endif
      make_context(l.ctx, l.stack.base, l.stack.size, &lane_main, &l);
    }
  }

  // Scheduler -> lane, back when the lane waits or finishes.
  void resume(Lane& l) {
    current_lane = &l;
    current_view = &l.view;
#ifdef HDAS_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, l.stack.base, l.stack.size);
#endif
#ifdef HDAS_EMU_TSAN
    __tsan_switch_to_fiber(l.tsan_fiber, 0);
#endif
    swap_context(sched, l.ctx);
#ifdef HDAS_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    current_lane = nullptr;
    current_view = nullptr;
  }

  // Where the lanes are, runs of lanes in the same place on one line each.
  std::string describe(int n) const {
    auto where = [](const Lane& l) {
      std::ostringstream s;
      switch (l.state) {
        case LaneState::kDone: s << "exited"; break;
        case LaneState::kWaitBlock: s << "at __syncthreads"; break;
        case LaneState::kWaitWarp: s << "at " << op_name(l.op) << ", mask 0x" << std::hex << l.mask; break;
        case LaneState::kRunning: s << "running"; break;
      }
      return s.str();
    };
    std::ostringstream s;
    for (int i = 0; i < n;) {
      const std::string w = where(lanes[i]);
      int j = i + 1;
      while (j < n && where(lanes[j]) == w) ++j;
      s << "\n  lanes " << i << "-" << j - 1 << ": " << w;
      i = j;
    }
    return s.str();
  }

  [[noreturn]] void error(const Job& job, int n, const std::string& what) const {
    std::ostringstream s;
    s << "emulated CUDA: " << what << " (block (" << job.block_idx.x << ", " << job.block_idx.y << ", "
      << job.block_idx.z << "), warp " << warp << ")" << describe(n);
    throw std::runtime_error(s.str());
  }

  // Completes every warp operation whose mask lanes all wait on it; true if any completed.
  bool complete_warp_ops(const Job& job, int n) {
    bool progress = false;
    for (int i = 0; i < n; ++i) {
      Lane& l = lanes[i];
      if (l.state != LaneState::kWaitWarp) continue;
      const unsigned m = l.mask;
      if (!(m >> i & 1u)) error(job, n, std::string(op_name(l.op)) + " by a lane outside its mask");
      if (n < kLanes && (m >> n) != 0) error(job, n, std::string(op_name(l.op)) + " names lanes this warp lacks");
      bool ready = true;
      for (int j = 0; j < n; ++j) {
        if (!(m >> j & 1u)) continue;
        const Lane& o = lanes[j];
        if (o.state == LaneState::kDone)
          error(job, n, std::string(op_name(l.op)) + " names lane " + std::to_string(j) + ", which has exited");
        if (o.state != LaneState::kWaitWarp || o.op != l.op || o.mask != m) ready = false;
      }
      if (!ready) continue;
      uint64_t ballot = 0;
      for (int j = 0; j < n; ++j)
        if ((m >> j & 1u) && lanes[j].value != 0) ballot |= uint64_t(1) << j;
      for (int j = 0; j < n; ++j) {
        if (!(m >> j & 1u)) continue;
        Lane& o = lanes[j];
        const int w = o.width;
        if (w <= 0 || w > kLanes || (w & (w - 1)) != 0)
          error(job, n, std::string(op_name(o.op)) + " with a width that is not a power of 2 up to 32");
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
          error(job, n, std::string(op_name(o.op)) + " reads lane " + std::to_string(src) + ", outside the mask");
        o.result = o.op == WarpOp::kBallot ? ballot : lanes[src].value;
      }
      for (int j = 0; j < n; ++j)
        if (m >> j & 1u) lanes[j].state = LaneState::kRunning;
      progress = true;
    }
    return progress;
  }

  void run_warp(Job& job) {
    const int first = warp * kLanes, n = std::min(kLanes, job.threads - first);
    for (int i = 0; i < n; ++i) {
      const unsigned t = unsigned(first + i);
      Lane& l = lanes[i];
      l.view = ThreadView{uint3(t % job.block.x, t / job.block.x % job.block.y, t / (job.block.x * job.block.y)),
                          job.block_idx, job.block, job.grid};
      l.state = LaneState::kRunning;
    }
    for (;;) {
      for (int i = 0; i < n; ++i)
        if (lanes[i].state == LaneState::kRunning) resume(lanes[i]);
      int done = 0, at_block = 0;
      for (int i = 0; i < n; ++i) {
        done += lanes[i].state == LaneState::kDone;
        at_block += lanes[i].state == LaneState::kWaitBlock;
      }
      if (done == n) return;
      if (complete_warp_ops(job, n)) continue;
      if (done + at_block != n) error(job, n, "deadlock: lanes wait at warp operations no other lane can join");
      if (!job.barrier.arrive_and_wait()) throw Aborted{};
      for (int i = 0; i < n; ++i)
        if (lanes[i].state == LaneState::kWaitBlock) lanes[i].state = LaneState::kRunning;
    }
  }

  void run(Job& job) {
    current_job = &job;
    try {
      run_warp(job);
      job.barrier.leave();
    } catch (const Aborted&) {
      reset_lanes();
    } catch (const std::exception& e) {
      job.fail(e.what());
      reset_lanes();
    }
    current_job = nullptr;
  }
};

// Lane -> scheduler.
void yield_lane(Lane& l) {
  Worker& w = *l.worker;
#ifdef HDAS_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, w.sched_bottom, w.sched_size);
#endif
#ifdef HDAS_EMU_TSAN
  __tsan_switch_to_fiber(w.tsan_sched, 0);
#endif
  swap_context(l.ctx, w.sched);
#ifdef HDAS_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &w.sched_bottom, &w.sched_size);
#endif
}

void lane_main(void* p) {
  Lane& l = *static_cast<Lane*>(p);
#ifdef HDAS_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &l.worker->sched_bottom, &l.worker->sched_size);
#endif
  for (;;) {
    current_job->invoke(current_job->closure);
    l.state = LaneState::kDone;
    yield_lane(l);
  }
}

// The warp threads, started on first use and reused by every block and launch.
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    start_.notify_all();
    for (auto& w : workers_) w->thread.join();
  }

  void run_block(Job& job) {
    while (static_cast<int>(workers_.size()) < job.warps) add_worker();
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &job;
      warps_ = job.warps;
      pending_ = job.warps;
      ++generation_;
    }
    start_.notify_all();
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [&] { return pending_ == 0; });
  }

 private:
  void add_worker() {
    auto w = std::make_unique<Worker>();
    w->warp = static_cast<int>(workers_.size());
    Worker* raw = w.get();
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lk(m_);
      seen = generation_;
    }
    w->thread = std::thread([this, raw, seen] { loop(*raw, seen); });
    workers_.push_back(std::move(w));
  }

  void loop(Worker& w, uint64_t seen) {
#ifdef HDAS_EMU_TSAN
    w.tsan_sched = __tsan_get_current_fiber();
#endif
    w.reset_lanes();
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lk(m_);
        start_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        // Decided here, under the lock: a worker this block does not use may wake after the launch
        // has finished and its Job is gone.
        if (w.warp >= warps_) continue;
        job = job_;
      }
      w.run(*job);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex m_;
  std::condition_variable start_, done_;
  std::vector<std::unique_ptr<Worker>> workers_;
  Job* job_ = nullptr;
  uint64_t generation_ = 0;
  int warps_ = 0, pending_ = 0;
  bool stop_ = false;
};

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

Lane& lane_or_die(const char* what) {
  if (current_lane == nullptr) {
    std::fprintf(stderr, "emulated CUDA: %s called outside a kernel\n", what);
    std::abort();
  }
  return *current_lane;
}

}  // namespace

void launch_erased(dim3 grid, dim3 block, size_t dynamic_smem, void (*invoke)(const void*), const void* closure) {
  static std::mutex launch_m;  // one launch at a time: __shared__ statics belong to the running block
  static Pool pool;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.x > 2147483647u || grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535)
    throw std::runtime_error("emulated CUDA: invalid configuration argument: grid " + dims(grid) + ", block " +
                             dims(block));
  if (dynamic_smem > kMaxDynamicSmem)
    throw std::runtime_error("emulated CUDA: " + std::to_string(dynamic_smem) +
                             " bytes of dynamic shared memory exceed the 48 KiB a launch gets by default");
  std::lock_guard<std::mutex> lk(launch_m);
  Job job;
  job.invoke = invoke;
  job.closure = closure;
  job.grid = grid;
  job.block = block;
  job.threads = static_cast<int>(threads);
  job.warps = static_cast<int>((threads + kLanes - 1) / kLanes);
  job.dynamic_smem.resize(dynamic_smem + 16);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        job.block_idx = uint3(x, y, z);
        job.barrier.reset(job.warps);
        std::fill(job.dynamic_smem.begin(), job.dynamic_smem.end(), static_cast<unsigned char>(0xff));
        pool.run_block(job);
        if (!job.error.empty()) throw std::runtime_error(job.error);
      }
}

void* dynamic_shared() {
  lane_or_die("dynamic shared memory");
  auto p = reinterpret_cast<uintptr_t>(current_job->dynamic_smem.data());
  return reinterpret_cast<void*>((p + 15) & ~uintptr_t(15));
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
  return l.result;
}

void syncthreads() {
  Lane& l = lane_or_die("__syncthreads");
  l.state = LaneState::kWaitBlock;
  yield_lane(l);
}

unsigned active_mask() {
  Lane& l = lane_or_die("__activemask");
  unsigned m = 0;
  for (int i = 0; i < kLanes; ++i)
    if (l.worker->lanes[i].state != LaneState::kDone && l.worker->warp * kLanes + i < current_job->threads)
      m |= 1u << i;
  return m;
}

}  // namespace hdas::emu
