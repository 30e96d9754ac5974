// The emulator's fibers (cuda_emu.cpp's only): a context switch that saves what the x86-64 ABI asks
// a callee to keep (ucontext elsewhere), and stacks with a guard page. Included once, inside
// cuda_emu.cpp's anonymous namespace.
#pragma once

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
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("emulated CUDA: cannot map a fiber stack");
    mprotect(p, page, PROT_NONE);
    base = static_cast<char*>(p) + page;
    size = kStackBytes;
  }
  ~Stack() { munmap(base - 4096, size + 4096); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
};

