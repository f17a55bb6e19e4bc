/* cuda_runtime.h of alexnet_c's CUDA emulator: stands in for the CUDA toolkit's header
 * when csrc/cuda is built for the CPU (ALEXNET_C_CUDA=emulate, see setup.py).
 *
 * Why: most machines that build and test alexnet_c have no GPU, so without this the
 * CUDA kernels and the device-resident net would only ever be compiled. Built against
 * this header, the very same .cu sources run on the CPU: every CUDA thread of a block
 * is a fiber on one OS thread, switched only at __syncthreads() and warp shuffles, the
 * blocks of a grid are spread over OpenMP threads, __shared__ arrays belong to the
 * OS thread's block runner.
 * The tests of tests/test_cuda.py then check the kernels' index arithmetic, bounds,
 * barriers, shuffles, graph capture and error paths against torch like on a GPU.
 *
 * What it checks that a GPU would only show as wrong numbers or a fault:
 * - fresh device memory, and every __shared__ array at the start of every block, is
 *   filled with NaN bytes, so reading what no thread wrote poisons the result
 *   (both are uninitialised on a GPU); both are exactly-sized heap blocks, so ASan
 *   (ALEXNET_C_SANITIZE=1) reports an overrun of either;
 * - __syncthreads() that some threads of the block never reach, or reach after others
 *   exited, full-mask shuffles in a partial warp, and a block larger than the kernel's
 *   __launch_bounds__, are kernel faults (sticky cudaErrorLaunchFailure, message on
 *   stderr; for the last, stricter than a GPU, whose launch call refuses such a block
 *   with an error that is not sticky);
 * - threads run in index order between barriers (ALEXNET_C_EMU_SCHEDULE=reverse: in
 *   reverse order), so a missing barrier makes a thread read what its neighbours have
 *   not written yet, in one order or the other;
 * - float4 is 16-byte aligned, so UBSan (ALEXNET_C_SANITIZE=1) reports a misaligned
 *   vector load as the GPU would fault on it, and ASan reports device-memory overruns;
 * - cudaMemcpy directions are checked against the device allocations, a stream
 *   synchronisation or cudaMalloc inside a graph capture invalidates it, a fault is
 *   sticky (every later call returns it), as with the real runtime; so are bad
 *   arguments, handles and launch configurations refused with the real error codes
 *   (selftest.cu makes each refusal, tests/test_cuda_emulator.py checks its text).
 * What it cannot show: speed, occupancy, register or shared-memory limits of a real
 * GPU (tests/test_nvcc_build.py reads the last three from ptxas instead); races that
 * the fiber order hides (it is no race detector: compute-sanitizer's racecheck on a
 * GPU is); anything the hardware does differently from its
 * specification. Those need a GPU (benchmarks/gpu_check.sh).
 *
 * Knobs (environment, read once): ALEXNET_C_EMU_THREADS (OS threads for the blocks of
 * a grid; default: all cores), ALEXNET_C_EMU_SCHEDULE (forward | reverse),
 * ALEXNET_C_EMU_MEMORY_MB (device memory, default 16384), ALEXNET_C_EMU_SMS
 * (multiprocessors reported, default 132 as on an H100/H200), ALEXNET_C_EMU_CC (compute
 * capability reported, major * 10 + minor, default 90), ALEXNET_C_EMU_PTX (the compute_XY
 * the device code is reported to have been built for, cudaFuncAttributes::ptxVersion;
 * default: the compute capability, as when the build has SASS for the GPU; below 80 on
 * a capability 8+ device, the driver JIT-compiling an old arch's PTX). CUDA_VISIBLE_DEVICES=""
 * or "-1" hides the emulated device, as it hides a real one. The tensor-core API that
 * the TF32 GEMM uses is in mma.h beside this header.
 */
#ifndef ALEXNET_C_CUDA_EMU_RUNTIME_H
#define ALEXNET_C_CUDA_EMU_RUNTIME_H

#ifndef __cplusplus
#error "the CUDA emulator is C++ (it compiles the .cu sources as C++17)"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define CUDART_VERSION 13000
#define ALEXNET_C_CUDA_EMULATED 1

/* ---- qualifiers: plain C++ on the host ------------------------------------ */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
/* setup.py rewrites `__launch_bounds__(n[, m]) kernel(...) {` into a check_launch_bound()
 * call at the top of the kernel (below); one that it missed does not compile, and the
 * trailing :: makes the compiler name this identifier ("has not been declared"), where
 * a bare one before the kernel's name only gets "expected initializer". */
#define __launch_bounds__(...) acn_emu_launch_bounds_not_rewritten_by_setup_py::
#define __align__(n) __attribute__((aligned(n)))
/* setup.py rewrites every `__shared__ T name[..];` into a block_shared() call (below);
 * one that it missed does not compile. */
#define __shared__ acn_emu_shared_declaration_not_rewritten_by_setup_py

/* ---- types ----------------------------------------------------------------- */
enum cudaError_t : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorCudartUnloading = 4,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorStubLibrary = 34,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureWrongThread = 908,
    cudaErrorUnknown = 999,
};

enum cudaMemcpyKind : int {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaStreamCaptureMode : int {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};

enum cudaDeviceAttr : int {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
};

/* The fields alexnet_c reads; the real struct has more. */
struct cudaFuncAttributes {
    int binaryVersion;   /* the SASS the driver runs, major * 10 + minor */
    int ptxVersion;      /* the compute_XY it was built for (JIT-compiled from, or alongside) */
    int maxThreadsPerBlock;
};

#define cudaStreamDefault 0x0u
#define cudaStreamNonBlocking 0x1u

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
/* 16-byte alignment as on the GPU, so UBSan flags a misaligned float4 access. */
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

typedef struct acn_emu_stream *cudaStream_t;
typedef struct acn_emu_event *cudaEvent_t;
typedef struct acn_emu_graph *cudaGraph_t;
typedef struct acn_emu_graph_exec *cudaGraphExec_t;

#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

/* ---- the runtime API (emu_runtime.cpp) ------------------------------------- */
const char *cudaGetErrorString(cudaError_t err);
const char *cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph,
                                          unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

namespace acn_emu {

cudaError_t occupancy(int *blocks, int block_threads, size_t dynamic_smem);
cudaError_t func_attributes(cudaFuncAttributes *attr);

/* ---- what a kernel sees -----------------------------------------------------
 * Every CUDA thread is a fiber with its own stack, mapped at a multiple of its size;
 * the first word above the stack's guard page points to the thread's slot. So the
 * running thread is found from any address on the stack, without thread-local
 * storage: a TLS lookup is a call in a shared library (several per kernel call, for
 * threadIdx, blockIdx...), and ASan intercepts each, which made it the sanitizer
 * job's biggest cost. */
constexpr size_t kFiberStackBytes = 512 * 1024;   /* a power of two */
constexpr size_t kFiberGuardBytes = 4096;

struct BlockSlot {
    uint3 idx, dim, grid;   /* blockIdx, blockDim, gridDim */
};
struct ThreadSlot {
    uint3 idx;              /* threadIdx */
    const BlockSlot *block;
    void *runner;           /* the emulator's state of the block it belongs to */
};

/* Only valid on a fiber, i.e. in kernel code. */
inline ThreadSlot &current_thread(void) {
    const uintptr_t base = (uintptr_t)__builtin_frame_address(0) & ~(uintptr_t)(kFiberStackBytes - 1);
    return **reinterpret_cast<ThreadSlot *const *>(base + kFiberGuardBytes);
}

void syncthreads(void);

/* A __shared__ array: `__shared__ [__align__(n)] T name[a][b];` becomes
 *     static char acn_emu_site_name; auto &name = block_shared<T[a][b]>(&acn_emu_site_name);
 * The storage belongs to the OS thread's block runner (one block at a time), 64-byte
 * aligned, exactly sizeof(T[a][b]) bytes of heap (so ASan sees an overrun), and is
 * filled with NaN bytes the first time a thread of each block asks for it: on a GPU
 * shared memory holds whatever the last block left, so a read of a slot no thread of
 * this block wrote must not find a plausible value. More than 48 KB in one block (the
 * static shared memory a block may have) is a kernel fault. */
void *shared_storage(const void *site, size_t bytes);
template <class T>
inline T &block_shared(const void *site) {
    return *static_cast<T *>(shared_storage(site, sizeof(T)));
}
uint32_t shfl_xor(uint32_t mask, uint32_t value, int lane_mask, int width);
void syncwarp(unsigned mask);
/* A warp collective (mma.h's wmma operations): every lane of a full warp hands in up
 * to kWarpShareBytes, which are copied; returns the 32 copies, lane l's at
 * l * kWarpShareBytes, valid until the lane's next warp collective. A kernel fault
 * (naming `what`) in a partial warp or after lanes returned. */
constexpr size_t kWarpShareBytes = 64;
const void *warp_share(const void *data, size_t bytes, const char *what);
/* A kernel fault with this message, from kernel code (never returns). */
void warp_fault(const char *what);
/* The first statement of every kernel declared with __launch_bounds__(max_threads,
 * min_blocks): a block of more than max_threads threads is a kernel fault. On a GPU
 * such a launch fails (ptxas gave the kernel only the registers that many threads can
 * have); without this check the emulator would run it. min_blocks only steers ptxas. */
void check_launch_bound(long long max_threads, long long min_blocks = 0);

/* One launch: runs body once per CUDA thread of every block (or records the launch
 * when the stream is capturing a graph). A bad configuration, no device or a sticky
 * fault is left for cudaGetLastError(), as a real launch leaves it. */
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char *kernel,
            std::function<void()> body);

/* `kernel<<<grid, block, smem, stream>>>(args...)` is rewritten by setup.py to
 * `::acn_emu::Launch(grid, block, smem, stream).of(kernel, "kernel")(args...)`. The
 * arguments are converted to the kernel's parameter types and copied once, as a
 * launch copies them to the device. */
class Launch {
public:
    Launch(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr)
        : grid_(grid), block_(block), smem_(smem), stream_(stream) {}

    template <class... P>
    auto of(void (*kernel)(P...), const char *name) const {
        const Launch cfg = *this;
        return [cfg, kernel, name](auto &&...args) {
            static_assert(sizeof...(args) == sizeof...(P), "kernel launched with the wrong argument count");
            std::tuple<std::decay_t<P>...> packed(std::forward<decltype(args)>(args)...);
            launch(cfg.grid_, cfg.block_, cfg.smem_, cfg.stream_, name,
                   [kernel, packed]() { std::apply(kernel, packed); });
        };
    }

private:
    dim3 grid_, block_;
    size_t smem_;
    cudaStream_t stream_;
};

template <class T>
inline T bits_as(uint32_t u) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    T v;
    memcpy(&v, &u, 4);
    return v;
}
template <class T>
inline uint32_t as_bits(T v) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

}  // namespace acn_emu

template <class F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, F, int block_threads,
                                                                 size_t dynamic_smem) {
    return acn_emu::occupancy(blocks, block_threads, dynamic_smem);
}

/* Every kernel is in one module built for one arch, so the answer is the same for all. */
template <class F>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, F) {
    return acn_emu::func_attributes(attr);
}

/* ---- device built-ins --------------------------------------------------------- */
#define threadIdx (::acn_emu::current_thread().idx)
#define blockIdx (::acn_emu::current_thread().block->idx)
#define blockDim (::acn_emu::current_thread().block->dim)
#define gridDim (::acn_emu::current_thread().block->grid)
#define warpSize 32

inline void __syncthreads(void) { acn_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { acn_emu::syncwarp(mask); }

template <class T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize) {
    return acn_emu::bits_as<T>(acn_emu::shfl_xor(mask, acn_emu::as_bits(value), lane_mask, width));
}

/* Read-only and streaming loads are plain loads here. */
template <class T>
inline T __ldg(const T *p) { return *p; }
template <class T>
inline T __ldcs(const T *p) { return *p; }

inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}

#endif
