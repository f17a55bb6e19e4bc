/* emu_runtime.cpp: the CUDA runtime of alexnet_c's CPU emulator (see cuda_runtime.h
 * beside it for what it is for and what it checks).
 *
 * Execution model. Everything is synchronous: a launch or copy on a stream runs before
 * the call returns, unless the stream is capturing a graph, in which case it is
 * recorded and runs at cudaGraphLaunch. A launch runs its blocks on OpenMP threads; a
 * block's CUDA threads are fibers on that OS thread (their own stacks), run in index order,
 * each until it reaches a barrier (__syncthreads, a warp shuffle) or returns. The last
 * thread to reach a barrier releases it and goes on; the others resume on the next
 * pass. A pass in which no thread can run is a deadlock: a kernel fault.
 */
#include "cuda_runtime.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define ACN_EMU_ASAN 1
#else
#define ACN_EMU_ASAN 0
#endif

using Op = std::function<void()>;

struct acn_emu_stream {
    unsigned flags = 0;
    bool capturing = false;
    bool invalidated = false;          /* an unsafe call happened during the capture */
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    std::thread::id capture_thread;
    std::vector<Op> nodes;             /* what the capture recorded */
};

struct acn_emu_graph {
    std::vector<Op> nodes;
};

struct acn_emu_graph_exec {
    std::vector<Op> nodes;
};

struct acn_emu_event {
    bool recorded = false;
    std::chrono::steady_clock::time_point at;
};

namespace acn_emu {
namespace {

/* ---- settings ---------------------------------------------------------------- */

struct Settings {
    int threads;
    bool reverse;
    size_t memory;
    int sms;
    int cc;               /* compute capability, major * 10 + minor */
    int ptx;              /* the arch the device code was built for (ptxVersion) */
    bool hidden;
};

long env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = nullptr;
    const long n = strtol(v, &end, 10);
    if (*end || n < lo || n > hi) {
        fprintf(stderr, "alexnet_c CUDA emulator: %s=%s is not an integer in [%ld, %ld]; using %ld\n",
                name, v, lo, hi, dflt);
        return dflt;
    }
    return n;
}

/* CUDA_VISIBLE_DEVICES hides device 0 when it is empty, or when its first entry is
 * not 0 (the runtime stops at the first invalid entry; the emulator has one device). */
bool device_hidden(void) {
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!v) return false;
    while (*v == ' ') ++v;
    return !(v[0] == '0' && (v[1] == '\0' || v[1] == ','));
}

const Settings &settings(void) {
    static const Settings s = [] {
        Settings r;
        r.threads = (int)env_long("ALEXNET_C_EMU_THREADS", omp_get_num_procs(), 1, 1024);
        const char *sched = getenv("ALEXNET_C_EMU_SCHEDULE");
        r.reverse = sched && strcmp(sched, "reverse") == 0;
        if (sched && *sched && !r.reverse && strcmp(sched, "forward") != 0)
            fprintf(stderr, "alexnet_c CUDA emulator: ALEXNET_C_EMU_SCHEDULE=%s is not forward or "
                            "reverse; using forward\n", sched);
        r.memory = (size_t)env_long("ALEXNET_C_EMU_MEMORY_MB", 16384, 1, 1L << 24) << 20;
        r.sms = (int)env_long("ALEXNET_C_EMU_SMS", 132, 1, 100000);
        r.cc = (int)env_long("ALEXNET_C_EMU_CC", 90, 50, 129);
        r.ptx = (int)env_long("ALEXNET_C_EMU_PTX", r.cc, 50, r.cc);   /* a GPU cannot load newer code */
        r.hidden = device_hidden();
        return r;
    }();
    return s;
}

/* ---- errors ------------------------------------------------------------------- */

thread_local cudaError_t tl_last = cudaSuccess;
std::atomic<int> g_sticky{cudaSuccess};   /* a kernel fault: every later call returns it */

cudaError_t fail(cudaError_t err) {
    if (err != cudaSuccess) tl_last = err;
    return err;
}

/* The first check of every API call: a sticky fault, or no device. */
cudaError_t entry_error(void) {
    const int sticky = g_sticky.load(std::memory_order_acquire);
    if (sticky != cudaSuccess) return (cudaError_t)sticky;
    if (settings().hidden) return cudaErrorNoDevice;
    return cudaSuccess;
}

#define EMU_ENTER()                                   \
    do {                                              \
        const cudaError_t e_ = entry_error();         \
        if (e_ != cudaSuccess) return fail(e_);       \
    } while (0)

std::mutex g_fault_lock;

/* thread: the faulting CUDA thread, or nullptr for a fault of the whole block. */
void report_fault(const char *kernel, const uint3 &block, const uint3 *thread, const std::string &what) {
    std::lock_guard<std::mutex> guard(g_fault_lock);
    int expected = cudaSuccess;
    if (!g_sticky.compare_exchange_strong(expected, cudaErrorLaunchFailure)) return;   /* first only */
    char where[64] = "";
    if (thread) snprintf(where, sizeof where, " thread (%u,%u,%u)", thread->x, thread->y, thread->z);
    fprintf(stderr, "alexnet_c CUDA emulator: kernel fault in %s, block (%u,%u,%u)%s: %s\n", kernel,
            block.x, block.y, block.z, where, what.c_str());
}

/* ---- streams, graphs, events, allocations ---------------------------------------- */

std::mutex g_lock;                       /* streams, events, graphs, allocations */
std::set<acn_emu_stream *> g_streams;
std::set<acn_emu_event *> g_events;
std::set<acn_emu_graph *> g_graphs;
std::set<acn_emu_graph_exec *> g_execs;
std::map<uintptr_t, size_t> g_allocs;   /* device allocations: base -> bytes */
size_t g_alloc_bytes = 0;
/* The streams in a capture: created ones, and every thread's cudaStreamPerThread, which
 * g_streams does not hold (an unsafe call must invalidate a capture on those too). */
std::set<acn_emu_stream *> g_capturing;
int g_global_captures = 0;               /* captures in cudaStreamCaptureModeGlobal */

acn_emu_stream g_legacy_stream;
/* A thread that exits mid-capture on its per-thread stream takes it out of g_capturing,
 * which would otherwise point into the dead thread's storage. */
struct PerThreadStream {
    acn_emu_stream s;
    ~PerThreadStream() {
        std::lock_guard<std::mutex> guard(g_lock);
        if (g_capturing.erase(&s) && s.mode == cudaStreamCaptureModeGlobal) --g_global_captures;
    }
};
thread_local PerThreadStream tl_per_thread_stream;
thread_local int tl_strict_captures = 0;   /* this thread's global / thread-local captures */

/* NULL, the legacy and the per-thread stream are built in; anything else must be live. */
acn_emu_stream *resolve(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy) return &g_legacy_stream;
    if (s == cudaStreamPerThread) return &tl_per_thread_stream.s;
    std::lock_guard<std::mutex> guard(g_lock);
    return g_streams.count(s) ? s : nullptr;
}

/* A call the real runtime forbids while a capture could be affected by it (it would
 * synchronise, or allocate): it fails and invalidates the captures it would break. */
bool capture_forbids_unsafe_call(void) {
    std::lock_guard<std::mutex> guard(g_lock);
    if (tl_strict_captures == 0 && g_global_captures == 0) return false;
    for (acn_emu_stream *s : g_capturing)
        if (s->mode != cudaStreamCaptureModeRelaxed &&
            (s->mode == cudaStreamCaptureModeGlobal || s->capture_thread == std::this_thread::get_id()))
            s->invalidated = true;
    return true;
}

/* Runs op now, or records it when the stream captures. */
cudaError_t submit(cudaStream_t stream, Op op) {
    acn_emu_stream *s = resolve(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (s->capturing) {
        s->nodes.push_back(std::move(op));
        return cudaSuccess;
    }
    op();
    return cudaSuccess;
}

/* [p, p + bytes) lies inside one device allocation. */
bool in_device_memory(const void *p, size_t bytes) {
    std::lock_guard<std::mutex> guard(g_lock);
    const uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && bytes <= it->second && a - it->first <= it->second - bytes;
}

/* ---- fibers ----------------------------------------------------------------------- */

/* The context switch. glibc's swapcontext saves and restores the signal mask with a
 * system call on every switch; a block of the implicit GEMM switches ~50,000 times,
 * and with swapcontext the test suite spent 7 of its 9 minutes in the kernel. On
 * x86-64 a fiber switch only needs what the SysV ABI makes callee-saved: rbx, rbp,
 * r12-r15, the stack pointer, and the MXCSR / x87 control words. Elsewhere: ucontext. */
#if defined(__x86_64__) && !defined(ACN_EMU_UCONTEXT)
extern "C" void acn_emu_switch(void **save_sp, void *next_sp);
__asm__(
    ".text\n"
    ".globl acn_emu_switch\n"
    ".hidden acn_emu_switch\n"
    ".type acn_emu_switch, @function\n"
    "acn_emu_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n"
    "    stmxcsr (%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    ldmxcsr (%rsp)\n"
    "    fldcw 4(%rsp)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size acn_emu_switch, .-acn_emu_switch\n");

struct Context {
    void *sp = nullptr;
};

/* A fresh stack whose first switch-in "returns" into entry, with the stack aligned as
 * at a function's first instruction, and the current thread's floating-point modes. */
void make_context(Context &c, char *stack_lo, size_t size, void (*entry)(void)) {
    uintptr_t top = ((uintptr_t)stack_lo + size) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;                 /* entry's return address: it never returns */
    *--sp = (void *)entry;           /* popped by acn_emu_switch's ret */
    for (int i = 0; i < 6; ++i) *--sp = nullptr;   /* rbp rbx r12 r13 r14 r15 */
    --sp;
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    memcpy((char *)sp, &mxcsr, 4);
    memcpy((char *)sp + 4, &fpucw, 2);
    c.sp = sp;
}
inline void switch_context(Context &from, Context &to) { acn_emu_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};
thread_local ucontext_t tl_blank;          /* one getcontext() to copy (it is a syscall) */
thread_local bool tl_have_blank = false;
void make_context(Context &c, char *stack_lo, size_t size, void (*entry)(void)) {
    if (!tl_have_blank) {
        if (getcontext(&tl_blank) != 0) abort();
        tl_have_blank = true;
    }
    c.uc = tl_blank;
    c.uc.uc_stack.ss_sp = stack_lo;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void switch_context(Context &from, Context &to) { swapcontext(&from.uc, &to.uc); }
#endif

constexpr size_t kGuard = kFiberGuardBytes;
constexpr size_t kStackBytes = kFiberStackBytes;   /* ASan's redzones need room; it is only reserved */
/* Stacks are used from the top down; the word at stack + kGuard is the slot pointer
 * (current_thread), with the rest of that cache line unused. */
constexpr size_t kSlotBytes = 64;

enum FiberState : int { kReady, kWaiting, kDone };

struct Fiber {
    Context ctx;
    ThreadSlot slot;      /* threadIdx, and the way back to its BlockRunner */
    int state;
    int wait_warp;        /* -1: the block barrier */
    unsigned wait_gen;
    void *asan_fake;      /* ASan's fake stack of this fiber while it is switched out */
};

/* What one OS thread needs to run blocks; reused from block to block. */
struct BlockRunner {
    std::vector<Fiber> fibers;
    std::vector<char *> stacks;          /* kStackBytes each */
    Context sched;
    const void *sched_stack = nullptr;   /* for ASan's fiber switches */
    size_t sched_stack_size = 0;

    BlockSlot block;                     /* the block being run */
    int n = 0, cur = 0, done = 0;
    unsigned bar_gen = 0;
    int bar_arrived = 0;
    std::vector<unsigned> warp_gen;
    std::vector<int> warp_arrived, warp_done, warp_size;
    std::vector<uint32_t> slots;         /* [warp][generation parity][lane] */
    std::vector<unsigned char> shares;   /* the same for warp_share, kWarpShareBytes a lane */
    const std::function<void()> *body = nullptr;
    const char *kernel = "";
    bool faulted = false;
    unsigned long long serial = 0;       /* blocks run so far on this OS thread */
    struct Shared {
        const void *site;                /* the declaration's key (block_shared) */
        void *mem;
        size_t bytes;
        unsigned long long serial;       /* the block that last poisoned it */
    };
    std::vector<Shared> shared;
    size_t shared_bytes = 0;             /* static shared memory of the running block */

    ~BlockRunner() {
        for (char *s : stacks) munmap(s, kStackBytes);
        for (Shared &s : shared) free(s.mem);
    }
};

thread_local BlockRunner tl_runner;

/* From inside a fiber: its block's runner (a barrier is a hot call: no TLS here). */
inline BlockRunner &current_runner(void) { return *static_cast<BlockRunner *>(current_thread().runner); }

char *new_stack(void) {
    /* Twice the size, then trimmed to a kStackBytes-aligned piece (current_thread). */
    void *raw = mmap(nullptr, 2 * kStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t lo = (uintptr_t)raw, aligned = (lo + kStackBytes - 1) & ~(uintptr_t)(kStackBytes - 1);
    if (aligned > lo) munmap(raw, aligned - lo);
    if (aligned + kStackBytes < lo + 2 * kStackBytes)
        munmap((void *)(aligned + kStackBytes), lo + 2 * kStackBytes - (aligned + kStackBytes));
    char *p = reinterpret_cast<char *>(aligned);
#if ACN_EMU_ASAN
    /* The addresses may have been a finished thread's stack, whose frames' redzones
     * are still poisoned in ASan's shadow memory. */
    __asan_unpoison_memory_region(p, kStackBytes);
#endif
    (void)mprotect(p, kGuard, PROT_NONE);   /* an overflow faults instead of corrupting */
    return p;
}

/* Before a stack carries a new fiber: the previous fiber on it never returned from
 * fiber_main (it switched away for good), so under ASan the redzones of its last frames
 * are still poisoned where the new fiber's first frames go. Those frames sit in the
 * top few hundred bytes; 16 KB is a wide margin. */
inline void reuse_stack(char *stack) {
#if ACN_EMU_ASAN
    constexpr size_t kTop = 16 * 1024;
    __asan_unpoison_memory_region(stack + kStackBytes - kTop, kTop);
#else
    (void)stack;
#endif
}

inline void asan_enter_fiber(BlockRunner &r, Fiber &f) {
#if ACN_EMU_ASAN
    __sanitizer_finish_switch_fiber(f.asan_fake, &r.sched_stack, &r.sched_stack_size);
#else
    (void)r;
    (void)f;
#endif
}

/* From a fiber back to the scheduler; returns when the scheduler resumes it. */
void yield_to_scheduler(BlockRunner &r, Fiber &f) {
#if ACN_EMU_ASAN
    __sanitizer_start_switch_fiber(&f.asan_fake, r.sched_stack, r.sched_stack_size);
#endif
    switch_context(f.ctx, r.sched);
    asan_enter_fiber(r, f);
}

/* The fiber's end: the switch never comes back (nothing resumes a fiber that left), and
 * ASan may drop the fiber's frames. Neither declared nor detectably noreturn, on
 * purpose: under ASan, GCC precedes every call of a noreturn function with
 * __asan_handle_no_return, which clears the shadow of the whole fiber stack (64 KB of
 * shadow per fiber exit); the emulator clears what it must itself (reuse_stack,
 * abandon_fibers). */
void leave_fiber(BlockRunner &r) {
#if ACN_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, r.sched_stack, r.sched_stack_size);
#endif
    Context dead;   /* saved into, never resumed */
    switch_context(dead, r.sched);
}

/* Never returns either (see leave_fiber for why it is not marked so). */
void fault_in_fiber(BlockRunner &r, const std::string &what) {
    report_fault(r.kernel, r.block.idx, &r.fibers[r.cur].slot.idx, what);
    r.faulted = true;
    leave_fiber(r);
}

void fiber_main(void) {
    BlockRunner &r = current_runner();
    Fiber &first = r.fibers[r.cur];
    asan_enter_fiber(r, first);
    (*r.body)();
    const int t = r.cur;   /* the fiber may have been resumed many times: re-read */
    r.fibers[t].state = kDone;
    ++r.done;
    ++r.warp_done[t / warpSize];
    leave_fiber(r);
}

std::string deadlock_text(const BlockRunner &r) {
    int at_bar = 0, at_warp = 0;
    for (int i = 0; i < r.n; ++i) {
        if (r.fibers[i].state != kWaiting) continue;
        if (r.fibers[i].wait_warp < 0) ++at_bar; else ++at_warp;
    }
    char text[256];
    snprintf(text, sizeof text,
             "deadlock: %d of %d threads wait at __syncthreads(), %d at a warp shuffle, %d have returned "
             "(a barrier not reached by every thread of the block / warp)",
             at_bar, r.n, at_warp, r.done);
    return text;
}

/* After a fault the block's fibers are left mid-call, never resumed; returns false. */
bool abandon_fibers(BlockRunner &r) {
#if ACN_EMU_ASAN
    /* Their frames' redzones stay poisoned unless cleared before the stacks run again. */
    for (int i = 0; i < r.n; ++i)
        __asan_unpoison_memory_region(r.stacks[i] + kGuard + kSlotBytes, kStackBytes - kGuard - kSlotBytes);
#else
    (void)r;
#endif
    return false;
}

/* Runs every thread of the block r.block; false after a fault. */
bool run_block(BlockRunner &r, const std::function<void()> &body, const char *kernel, const dim3 &block) {
    const int n = (int)(block.x * block.y * block.z);
    const int warps = (n + warpSize - 1) / warpSize;
    if ((int)r.fibers.size() < n) r.fibers.resize(n);
    while ((int)r.stacks.size() < n) {
        char *s = new_stack();
        if (!s) {
            report_fault(kernel, r.block.idx, nullptr, "no memory for the fibers' stacks");
            return false;
        }
        r.stacks.push_back(s);
    }
    r.n = n;
    r.done = 0;
    r.bar_gen = 0;
    r.bar_arrived = 0;
    r.warp_gen.assign(warps, 0);
    r.warp_arrived.assign(warps, 0);
    r.warp_done.assign(warps, 0);
    r.warp_size.assign(warps, warpSize);
    if (n % warpSize) r.warp_size[warps - 1] = n % warpSize;
    r.slots.assign((size_t)warps * 2 * warpSize, 0);
    r.shares.assign((size_t)warps * 2 * warpSize * kWarpShareBytes, 0);
    r.body = &body;
    r.kernel = kernel;
    r.faulted = false;
    ++r.serial;
    r.shared_bytes = 0;
    for (int i = 0; i < n; ++i) {
        Fiber &f = r.fibers[i];
        reuse_stack(r.stacks[i]);
        *reinterpret_cast<ThreadSlot **>(r.stacks[i] + kGuard) = &f.slot;
        make_context(f.ctx, r.stacks[i] + kGuard + kSlotBytes, kStackBytes - kGuard - kSlotBytes, fiber_main);
        f.slot.idx = uint3{(unsigned)i % block.x, (unsigned)i / block.x % block.y,
                           (unsigned)i / (block.x * block.y)};
        f.slot.block = &r.block;
        f.slot.runner = &r;
        f.state = kReady;
        f.wait_warp = -1;
        f.wait_gen = 0;
        f.asan_fake = nullptr;
    }
    const bool reverse = settings().reverse;
    for (;;) {
        bool ran = false;
        for (int k = 0; k < n; ++k) {
            const int i = reverse ? n - 1 - k : k;
            Fiber &f = r.fibers[i];
            if (f.state == kDone) continue;
            if (f.state == kWaiting) {
                const unsigned gen = f.wait_warp < 0 ? r.bar_gen : r.warp_gen[f.wait_warp];
                if (gen == f.wait_gen) continue;
                f.state = kReady;
            }
            r.cur = i;
#if ACN_EMU_ASAN
            void *fake = nullptr;
            __sanitizer_start_switch_fiber(&fake, r.stacks[i] + kGuard + kSlotBytes,
                                           kStackBytes - kGuard - kSlotBytes);
#endif
            switch_context(r.sched, f.ctx);
#if ACN_EMU_ASAN
            __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
            ran = true;
            if (r.faulted) return abandon_fibers(r);
        }
        if (r.done == n) return true;
        if (!ran) {
            report_fault(kernel, r.block.idx, nullptr, deadlock_text(r));
            return abandon_fibers(r);
        }
    }
}

/* A thread of the running block arrives at a barrier: the block's (warp < 0) or its
 * warp's. The last to arrive releases it and goes on; the others wait. */
void arrive(BlockRunner &r, int warp) {
    Fiber &f = r.fibers[r.cur];
    if (warp < 0) {
        if (++r.bar_arrived == r.n) {
            r.bar_arrived = 0;
            ++r.bar_gen;
            return;
        }
        f.wait_gen = r.bar_gen;
    } else {
        if (++r.warp_arrived[warp] == r.warp_size[warp]) {
            r.warp_arrived[warp] = 0;
            ++r.warp_gen[warp];
            return;
        }
        f.wait_gen = r.warp_gen[warp];
    }
    f.wait_warp = warp;
    f.state = kWaiting;
    yield_to_scheduler(r, f);
}

void run_grid(dim3 grid, dim3 block, const char *kernel, const std::function<void()> &body) {
    const long long blocks = (long long)grid.x * grid.y * grid.z;
    const int threads = (int)(blocks < settings().threads ? blocks : settings().threads);
    std::atomic<bool> stop{false};
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (long long b = 0; b < blocks; ++b) {
        if (stop.load(std::memory_order_relaxed)) continue;
        BlockRunner &r = tl_runner;
        r.block.idx = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                            (unsigned)(b / ((long long)grid.x * grid.y))};
        r.block.dim = uint3{block.x, block.y, block.z};
        r.block.grid = uint3{grid.x, grid.y, grid.z};
        if (!run_block(r, body, kernel, block)) stop.store(true, std::memory_order_relaxed);
    }
}

}  // namespace

void syncthreads(void) {
    BlockRunner &r = current_runner();
    if (r.done > 0) {
        char text[160];
        snprintf(text, sizeof text, "__syncthreads() after %d of the block's %d threads returned", r.done, r.n);
        fault_in_fiber(r, text);
    }
    arrive(r, -1);
}

void *shared_storage(const void *site, size_t bytes) {
    BlockRunner &r = current_runner();
    BlockRunner::Shared *s = nullptr;
    for (auto &entry : r.shared)
        if (entry.site == site) s = &entry;
    if (!s) {
        void *mem = nullptr;
        /* The exact size: ASan's redzone starts right after it. */
        if (posix_memalign(&mem, 64, bytes ? bytes : 1) != 0)
            fault_in_fiber(r, "no host memory for a __shared__ array");
        r.shared.push_back({site, mem, bytes, 0});
        s = &r.shared.back();
    }
    if (s->serial != r.serial) {   /* the first thread of this block to get here */
        s->serial = r.serial;
        r.shared_bytes += bytes;
        if (r.shared_bytes > 48 * 1024)
            fault_in_fiber(r, "the block's __shared__ arrays take " + std::to_string(r.shared_bytes) +
                                  " bytes; a block may have 48 KB of static shared memory");
        memset(s->mem, 0xff, bytes);
    }
    return s->mem;
}

namespace {

/* A warp-collective call (shuffle, __syncwarp, the wmma operations) needs the whole
 * warp: on a GPU a full-mask collective in a partial warp, or after lanes returned,
 * is undefined (a hang or garbage). Returns the slot set of this call: two sets by
 * generation parity, since a lane can be at most one collective ahead of the slowest
 * one, so the set it writes is never one still being read. */
size_t warp_collective(BlockRunner &r, unsigned mask, const char *what) {
    const int warp = r.cur / warpSize;
    if (mask != 0xffffffffu)
        fault_in_fiber(r, std::string(what) + ": the emulator runs full-warp collectives only (mask 0xffffffff)");
    if (r.warp_size[warp] != warpSize)
        fault_in_fiber(r, "full-mask " + std::string(what) + " in a warp of " +
                              std::to_string(r.warp_size[warp]) + " threads");
    if (r.warp_done[warp] > 0)
        fault_in_fiber(r, "full-mask " + std::string(what) + " after " + std::to_string(r.warp_done[warp]) +
                              " lanes of the warp returned");
    return ((size_t)warp * 2 + (r.warp_gen[warp] & 1u)) * warpSize;
}

}  // namespace

uint32_t shfl_xor(uint32_t mask, uint32_t value, int lane_mask, int width) {
    BlockRunner &r = current_runner();
    const int lane = r.cur % warpSize;
    if (width != warpSize)
        fault_in_fiber(r, "the emulator runs full-warp shuffles only (mask 0xffffffff, width 32)");
    uint32_t *slots = &r.slots[warp_collective(r, mask, "shuffle")];
    slots[lane] = value;
    arrive(r, r.cur / warpSize);
    const int src = lane ^ lane_mask;
    return src < warpSize ? slots[src] : value;
}

void syncwarp(unsigned mask) {
    BlockRunner &r = current_runner();
    (void)warp_collective(r, mask, "__syncwarp()");
    arrive(r, r.cur / warpSize);
}

const void *warp_share(const void *data, size_t bytes, const char *what) {
    BlockRunner &r = current_runner();
    if (bytes > kWarpShareBytes) fault_in_fiber(r, std::string(what) + ": too much data for warp_share");
    unsigned char *set = &r.shares[warp_collective(r, 0xffffffffu, what) * kWarpShareBytes];
    memcpy(set + (size_t)(r.cur % warpSize) * kWarpShareBytes, data, bytes);
    arrive(r, r.cur / warpSize);
    return set;
}

void warp_fault(const char *what) { fault_in_fiber(current_runner(), what); }

void check_launch_bound(long long max_threads, long long min_blocks) {
    (void)min_blocks;
    BlockRunner &r = current_runner();
    const uint3 d = r.block.dim;
    const long long threads = (long long)d.x * d.y * d.z;
    if (threads > max_threads)
        fault_in_fiber(r, "launched with " + std::to_string(threads) + " threads per block, above its "
                          "__launch_bounds__ of " + std::to_string(max_threads) +
                          " (a GPU refuses such a launch)");
}

cudaError_t occupancy(int *blocks, int block_threads, size_t dynamic_smem) {
    EMU_ENTER();
    if (!blocks || block_threads < 1 || block_threads > 1024 || dynamic_smem > 48 * 1024)
        return fail(cudaErrorInvalidValue);
    /* 2048 resident threads and 32 blocks per SM, as on sm_80 / sm_90. */
    const int by_threads = 2048 / block_threads;
    *blocks = by_threads < 32 ? by_threads : 32;
    return cudaSuccess;
}

cudaError_t func_attributes(cudaFuncAttributes *attr) {
    EMU_ENTER();
    if (!attr) return fail(cudaErrorInvalidValue);
    attr->binaryVersion = settings().cc;
    attr->ptxVersion = settings().ptx;
    attr->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char *kernel,
            std::function<void()> body) {
    const cudaError_t e = entry_error();
    if (e != cudaSuccess) {
        fail(e);
        return;
    }
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads < 1 || threads > 1024 || block.z > 64 || grid.x < 1 || grid.x > 0x7fffffffu ||
        grid.y < 1 || grid.y > 65535 || grid.z < 1 || grid.z > 65535) {
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    if (smem > 0) {   /* extern __shared__ is not emulated */
        fail(cudaErrorInvalidValue);
        return;
    }
    submit(stream, [grid, block, kernel, body = std::move(body)]() {
        if (g_sticky.load(std::memory_order_acquire) != cudaSuccess) return;
        run_grid(grid, block, kernel, body);
    });
}

}  // namespace acn_emu

using namespace acn_emu;

/* ---- the API ----------------------------------------------------------------------- */

const char *cudaGetErrorName(cudaError_t err) {
    switch (err) {
#define NAME(e) case e: return #e;
        NAME(cudaSuccess) NAME(cudaErrorInvalidValue) NAME(cudaErrorMemoryAllocation)
        NAME(cudaErrorInitializationError) NAME(cudaErrorCudartUnloading)
        NAME(cudaErrorInvalidConfiguration) NAME(cudaErrorInvalidMemcpyDirection) NAME(cudaErrorStubLibrary)
        NAME(cudaErrorInsufficientDriver) NAME(cudaErrorNoDevice) NAME(cudaErrorInvalidDevice)
        NAME(cudaErrorNoKernelImageForDevice) NAME(cudaErrorInvalidResourceHandle)
        NAME(cudaErrorIllegalState) NAME(cudaErrorNotReady) NAME(cudaErrorIllegalAddress)
        NAME(cudaErrorLaunchFailure) NAME(cudaErrorStreamCaptureUnsupported)
        NAME(cudaErrorStreamCaptureInvalidated) NAME(cudaErrorStreamCaptureWrongThread)
        NAME(cudaErrorUnknown)
#undef NAME
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t err) {
    switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorCudartUnloading: return "driver shutting down";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorStubLibrary: return "CUDA driver is a stub library";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread:
        return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorUnknown: return "unknown error";
    }
    return "unrecognized error code";
}

cudaError_t cudaGetLastError(void) {
    const int sticky = g_sticky.load(std::memory_order_acquire);
    if (sticky != cudaSuccess) return (cudaError_t)sticky;
    const cudaError_t e = tl_last;
    tl_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    const int sticky = g_sticky.load(std::memory_order_acquire);
    return sticky != cudaSuccess ? (cudaError_t)sticky : tl_last;
}

/* Asks the driver, not the context: a sticky fault does not change the answer (the
 * next call that needs the context reports it), as with the real runtime. */
cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return fail(cudaErrorInvalidValue);
    *count = 0;
    if (settings().hidden) return fail(cudaErrorNoDevice);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    EMU_ENTER();
    if (!device) return fail(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    EMU_ENTER();
    return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    EMU_ENTER();
    if (!value || device != 0) return fail(device != 0 ? cudaErrorInvalidDevice : cudaErrorInvalidValue);
    switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = settings().sms; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = settings().cc / 10; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = settings().cc % 10; return cudaSuccess;
    }
    return fail(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize(void) {
    EMU_ENTER();
    if (capture_forbids_unsafe_call()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    EMU_ENTER();
    if (!ptr) return fail(cudaErrorInvalidValue);
    *ptr = nullptr;
    if (capture_forbids_unsafe_call()) return fail(cudaErrorStreamCaptureUnsupported);
    if (bytes == 0) return cudaSuccess;
    {
        std::lock_guard<std::mutex> guard(g_lock);
        if (bytes > settings().memory - g_alloc_bytes) return fail(cudaErrorMemoryAllocation);
        g_alloc_bytes += bytes;
    }
    void *p = nullptr;
    /* The exact size: ASan's redzone starts right after the last byte asked for. */
    if (posix_memalign(&p, 256, bytes) != 0) {
        std::lock_guard<std::mutex> guard(g_lock);
        g_alloc_bytes -= bytes;
        return fail(cudaErrorMemoryAllocation);
    }
    /* NaN in every float: a kernel that reads what nobody wrote poisons its result. */
    memset(p, 0xff, bytes);
    std::lock_guard<std::mutex> guard(g_lock);
    g_allocs[(uintptr_t)p] = bytes;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    EMU_ENTER();
    if (!ptr) return cudaSuccess;
    if (capture_forbids_unsafe_call()) return fail(cudaErrorStreamCaptureUnsupported);
    {
        std::lock_guard<std::mutex> guard(g_lock);
        auto it = g_allocs.find((uintptr_t)ptr);
        if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);
        g_alloc_bytes -= it->second;
        g_allocs.erase(it);
    }
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    EMU_ENTER();
    if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> guard(g_lock);
    *total_bytes = settings().memory;
    *free_bytes = settings().memory - g_alloc_bytes;
    return cudaSuccess;
}

namespace {

/* Both ends of a copy where its kind says they are (the real runtime, with unified
 * addressing, refuses a device pointer given as host memory and the reverse). */
bool copy_ends_ok(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (!dst || !src) return false;
    switch (kind) {
    case cudaMemcpyHostToDevice: return in_device_memory(dst, bytes) && !in_device_memory(src, 1);
    case cudaMemcpyDeviceToHost: return in_device_memory(src, bytes) && !in_device_memory(dst, 1);
    case cudaMemcpyDeviceToDevice: return in_device_memory(src, bytes) && in_device_memory(dst, bytes);
    case cudaMemcpyHostToHost: return !in_device_memory(src, 1) && !in_device_memory(dst, 1);
    case cudaMemcpyDefault: return true;
    }
    return false;
}

}  // namespace

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    EMU_ENTER();
    /* A kind that is none of the five: the real runtime's own error for it. */
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return fail(cudaErrorInvalidMemcpyDirection);
    if (bytes == 0) return cudaSuccess;
    if (!copy_ends_ok(dst, src, bytes, kind)) return fail(cudaErrorInvalidValue);
    return submit(stream, [dst, src, bytes]() {
        if (g_sticky.load(std::memory_order_acquire) == cudaSuccess) memcpy(dst, src, bytes);
    });
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    EMU_ENTER();
    if (capture_forbids_unsafe_call()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    EMU_ENTER();
    if (!stream || (flags & ~cudaStreamNonBlocking)) return fail(cudaErrorInvalidValue);
    acn_emu_stream *s = new acn_emu_stream;
    s->flags = flags;
    std::lock_guard<std::mutex> guard(g_lock);
    g_streams.insert(s);
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    EMU_ENTER();
    std::lock_guard<std::mutex> guard(g_lock);
    if (!g_streams.count(stream)) return fail(cudaErrorInvalidResourceHandle);
    if (stream->capturing) return fail(cudaErrorStreamCaptureUnsupported);
    g_streams.erase(stream);
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    EMU_ENTER();
    acn_emu_stream *s = resolve(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (s->capturing) {
        s->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    if (capture_forbids_unsafe_call()) return fail(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;   /* all work ran when it was submitted */
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
    EMU_ENTER();
    if (stream == nullptr || stream == cudaStreamLegacy)
        return fail(cudaErrorStreamCaptureUnsupported);   /* the legacy stream cannot capture */
    acn_emu_stream *s = resolve(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> guard(g_lock);
    if (s->capturing) return fail(cudaErrorIllegalState);
    s->capturing = true;
    s->invalidated = false;
    s->mode = mode;
    s->capture_thread = std::this_thread::get_id();
    s->nodes.clear();
    g_capturing.insert(s);
    if (mode != cudaStreamCaptureModeRelaxed) ++tl_strict_captures;
    if (mode == cudaStreamCaptureModeGlobal) ++g_global_captures;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    const cudaError_t e = entry_error();
    if (e != cudaSuccess) return fail(e);
    if (!graph) return fail(cudaErrorInvalidValue);
    *graph = nullptr;
    acn_emu_stream *s = resolve(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> guard(g_lock);
    if (!s->capturing) return fail(cudaErrorIllegalState);
    if (s->mode != cudaStreamCaptureModeRelaxed && s->capture_thread != std::this_thread::get_id())
        return fail(cudaErrorStreamCaptureWrongThread);
    s->capturing = false;
    g_capturing.erase(s);
    if (s->mode != cudaStreamCaptureModeRelaxed) --tl_strict_captures;
    if (s->mode == cudaStreamCaptureModeGlobal) --g_global_captures;
    std::vector<Op> nodes;
    nodes.swap(s->nodes);
    if (s->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    acn_emu_graph *g = new acn_emu_graph;
    g->nodes = std::move(nodes);
    g_graphs.insert(g);
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long) {
    EMU_ENTER();
    if (!exec) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> guard(g_lock);
    if (!g_graphs.count(graph)) return fail(cudaErrorInvalidResourceHandle);
    acn_emu_graph_exec *x = new acn_emu_graph_exec;
    x->nodes = graph->nodes;   /* an executable graph is independent of its graph */
    g_execs.insert(x);
    *exec = x;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph,
                                          unsigned long long flags) {
    return cudaGraphInstantiate(exec, graph, flags);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    EMU_ENTER();
    {
        std::lock_guard<std::mutex> guard(g_lock);
        if (!g_execs.count(exec)) return fail(cudaErrorInvalidResourceHandle);
    }
    return submit(stream, [exec]() {
        for (const Op &op : exec->nodes) op();
    });
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    EMU_ENTER();
    std::lock_guard<std::mutex> guard(g_lock);
    if (!g_graphs.erase(graph)) return fail(cudaErrorInvalidResourceHandle);
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    EMU_ENTER();
    std::lock_guard<std::mutex> guard(g_lock);
    if (!g_execs.erase(exec)) return fail(cudaErrorInvalidResourceHandle);
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) {
    EMU_ENTER();
    if (!event) return fail(cudaErrorInvalidValue);
    acn_emu_event *e = new acn_emu_event;
    std::lock_guard<std::mutex> guard(g_lock);
    g_events.insert(e);
    *event = e;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    EMU_ENTER();
    std::lock_guard<std::mutex> guard(g_lock);
    if (!g_events.erase(event)) return fail(cudaErrorInvalidResourceHandle);
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    EMU_ENTER();
    {
        std::lock_guard<std::mutex> guard(g_lock);
        if (!g_events.count(event)) return fail(cudaErrorInvalidResourceHandle);
    }
    return submit(stream, [event]() {
        event->at = std::chrono::steady_clock::now();
        event->recorded = true;
    });
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    EMU_ENTER();
    std::lock_guard<std::mutex> guard(g_lock);
    return g_events.count(event) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    EMU_ENTER();
    if (!ms) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> guard(g_lock);
    if (!g_events.count(start) || !g_events.count(end)) return fail(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded) return fail(cudaErrorNotReady);
    *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
    return cudaSuccess;
}
