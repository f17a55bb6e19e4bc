/* selftest.cu: kernels and runtime calls with the mistakes the CUDA emulator is there
 * to catch, and a correct twin of each, for tests/test_cuda_emulator.py (through
 * _C._emu_selftest). Built into ALEXNET_C_CUDA=emulate builds only; a GPU build never
 * sees this file (several kernels here would not even pass ptxas).
 *
 * A check that never fires proves nothing, so each of the emulator's checks is shown
 * here failing on a kernel or a call that is wrong in exactly that way.
 */
#include <mma.h>
#include <string.h>

#include <thread>

#include "cuda_common.cuh"

namespace acn {
namespace {

constexpr int kRotate = 64;   /* threads per block of the rotate kernels */

/* out[b][t] = t + 1 (mod 64), through shared memory: each thread reads what its
 * neighbour wrote, which needs the barrier in between. */
__global__ void rotate_kernel(float *out, int with_barrier) {
    __shared__ float slot[kRotate];
    const int t = threadIdx.x;
    slot[t] = (float)t;
    if (with_barrier) __syncthreads();
    out[blockIdx.x * kRotate + t] = slot[(t + 1) % kRotate];
}

/* Only half of the block reaches the barrier. */
__global__ void divergent_barrier_kernel(float *out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1.f;
}

/* Thread 0 returns before the barrier the others wait at. */
__global__ void barrier_after_return_kernel(float *out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1.f;
}

/* out[t] = sum of the lane numbers of t's warp; in a block that is not a whole
 * number of warps, a full-mask shuffle waits for lanes that do not exist. */
__global__ void warp_sum_kernel(float *out) {
    out[threadIdx.x] = warp_sum((float)(threadIdx.x % kWarp));
}

/* out[t] = inp[t], 16 bytes at a time: on a GPU a misaligned inp faults. */
__global__ void float4_copy_kernel(float4 *out, const float4 *inp) {
    out[threadIdx.x] = inp[threadIdx.x];
}

/* The self-test names of a kernel's variants, in the order of its mistake enum (the
 * first is the correct twin); variant() gives a name's index, or -1. */
template <size_t N>
int variant(const char *name, const char *const (&names)[N]) {
    for (size_t i = 0; i < N; ++i)
        if (!strcmp(name, names[i])) return (int)i;
    return -1;
}

enum WarpMistake { kWarpNone, kWarpWidth, kWarpMask, kWarpAfterReturn, kWarpShareTooMuch };
const char *const kWarpTests[] = {"warp", "warp_width", "warp_mask", "warp_after_return",
                                  "warp_share_too_much"};

/* out[t] = the sum of the lane numbers of t's warp, after a __syncwarp. The mistakes: a
 * shuffle of width 16 and a __syncwarp of half the warp (both legal on a GPU, but the
 * emulator runs full-warp collectives only, so it must refuse them rather than run them
 * as full ones), a collective after lane 0 returned, and more data handed to warp_share
 * (what mma.h's collectives are built on) than a lane's share holds. */
__global__ void warp_kernel(float *out, int mistake) {
    const int lane = threadIdx.x % kWarp;
    if (mistake == kWarpAfterReturn && lane == 0) return;
    if (mistake == kWarpShareTooMuch) {
        const unsigned char data[acn_emu::kWarpShareBytes + 1] = {};
        (void)acn_emu::warp_share(data, sizeof data, "self-test");
    }
    __syncwarp(mistake == kWarpMask ? 0xffffu : 0xffffffffu);
    float v = (float)lane;
    if (mistake == kWarpWidth) v = __shfl_xor_sync(0xffffffffu, v, 1, 16);
    out[threadIdx.x] = warp_sum(v);
}

enum SharedMistake { kSharedNone, kSharedOver48k, kSharedHuge };
const char *const kSharedTests[] = {"shared", "shared_over_48k", "shared_huge"};

/* out[t] = 1 from 48 KB of __shared__ arrays, the most a block may have statically. The
 * mistakes: one float more, and an array of 2^48 bytes, which no host can allocate. The
 * emulator counts an array when a thread reaches its declaration, so the two need not be
 * separate kernels (ptxas counts both at build time). */
__global__ void shared_kernel(float *out, int mistake) {
    __shared__ float most[48 * 1024 / sizeof(float)];
    most[threadIdx.x] = 1.f;
    if (mistake == kSharedOver48k) {
        __shared__ float one_more[1];
        one_more[0] = 0.f;
    } else if (mistake == kSharedHuge) {
        __shared__ float huge[1ull << 46];
        huge[0] = 0.f;
    }
    out[threadIdx.x] = most[threadIdx.x];
}

/* out[t] = inp[t + 1] or, with in_shared, a __shared__ array's slot t + 1: the last
 * thread reads one float past the end. Both are heap blocks of exactly their size in the
 * emulator, so ASan (ALEXNET_C_SANITIZE=1) must report it, as memcheck does on a GPU. */
__global__ void overrun_kernel(float *out, const float *inp, int in_shared) {
    __shared__ float tile[kWarp];
    tile[threadIdx.x] = 0.f;
    __syncthreads();
    out[threadIdx.x] = in_shared ? tile[threadIdx.x + 1] : inp[threadIdx.x + 1];
}

enum WmmaMistake { kWmmaNone, kWmmaUnrounded, kWmmaMisaligned, kWmmaLanesDisagree, kWmmaOddLdm, kWmmaHalfWarp };
const char *const kWmmaTests[] = {"wmma", "wmma_unrounded", "wmma_misaligned", "wmma_lanes_disagree",
                                  "wmma_odd_ldm", "wmma_half_warp"};

/* out (16,16) = A B + 1 on the tensor-core API, one warp: A[r][k] = r + k, B[k][c] = k - c
 * (small integers, exact in TF32). The mistakes: an A element that is no TF32 value
 * (never passed through __float_to_tf32); A loaded from 4 bytes past an aligned
 * address; one lane loading A from another (aligned) address than the rest; a leading
 * dimension that is no multiple of 4; and a block of 16 threads, a warp collective in a
 * partial warp. */
__global__ void wmma_kernel(float *out, int mistake) {
    using namespace nvcuda;
    __shared__ __align__(32) float ab[16 * 8 + 8 * 16 + 8];
    float *A = ab, *B = ab + 16 * 8;
    for (int i = threadIdx.x; i < 16 * 8; i += blockDim.x) {
        A[i] = (float)(i / 8 + i % 8);
        B[i] = (float)(i / 16 - i % 16);
        if (mistake == kWmmaUnrounded && i == 5) A[i] += 1.f / 4096;
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> c;
    wmma::fill_fragment(c, 1.f);
    const float *a_at = mistake == kWmmaMisaligned                           ? A + 1
                        : mistake == kWmmaLanesDisagree && threadIdx.x == 31 ? A + 8
                                                                             : A;
    wmma::load_matrix_sync(a, a_at, mistake == kWmmaOddLdm ? 10 : 8);
    wmma::load_matrix_sync(b, B, 16);
    wmma::mma_sync(c, a, b, c);
    wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}

/* out[t] = t, declared for at most 64 threads a block: a GPU refuses a launch of more
 * (ptxas sized its registers for 64), so the emulator must fault on one. */
__global__ void __launch_bounds__(64) launch_bound_kernel(float *out) {
    out[threadIdx.x] = (float)threadIdx.x;
}

__global__ void copy_kernel(float *out, const float *inp, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = inp[i];
}

/* ---- API misuse -------------------------------------------------------------------
 * Each case makes one call that the CUDA runtime refuses and returns that call's error,
 * which run_misuse reports as the self-test's failure: the test sees the runtime's own
 * text, and a case the runtime let through fails as "accepted". A case named *_ok is a
 * correct twin and must succeed. They run in the test process one after another (no
 * refusal here is a sticky error), so each undoes what it set up. */
constexpr size_t kFixtureFloats = 64;

struct Fixture {
    cudaStream_t stream = nullptr;                /* live, not capturing */
    cudaEvent_t start = nullptr, end = nullptr;   /* live, not recorded */
    float *dev = nullptr;                         /* kFixtureFloats on the device */
    float host[kFixtureFloats + 1] = {};          /* room for a copy that overruns dev */
    const char *broken = nullptr;                 /* why the case did not go as meant */
};

/* A call the case needs to succeed before its misuse: a failure is the case's (reported
 * as broken), never taken for the refusal the test expects. */
#define SETUP(call)                                                 \
    do {                                                            \
        if ((call) != cudaSuccess) {                                \
            f.broken = "a call it needs failed: " #call;            \
            return cudaSuccess;                                     \
        }                                                           \
    } while (0)

/* A handle that no create call made. */
template <class H>
H bogus(Fixture &f) {
    return reinterpret_cast<H>(&f.broken);
}

cudaError_t end_capture(cudaStream_t stream) {
    cudaGraph_t graph = nullptr;
    const cudaError_t err = cudaStreamEndCapture(stream, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    return err;
}

/* call, made while `capturing` is captured in mode (on another thread if elsewhere).
 * Its error, provided that a refusal also invalidated the capture and an allowed call
 * left it intact, as the real runtime does; else the case is broken. */
cudaError_t during_capture(Fixture &f, cudaStream_t capturing, cudaStreamCaptureMode mode, bool elsewhere,
                           cudaError_t (*call)(Fixture &)) {
    SETUP(cudaStreamBeginCapture(capturing, mode));
    cudaError_t err = cudaSuccess;
    if (elsewhere)
        std::thread([&] { err = call(f); }).join();
    else
        err = call(f);
    const cudaError_t end = end_capture(capturing);
    if (end != (err != cudaSuccess ? cudaErrorStreamCaptureInvalidated : cudaSuccess))
        f.broken = err != cudaSuccess ? "the refused call did not invalidate the capture"
                                      : "the capture failed after an allowed call";
    return err;
}

/* Begins a capture of f.stream here and ends it on another thread (and here, where that
 * was refused); the other thread's answer. */
cudaError_t end_capture_elsewhere(Fixture &f, cudaStreamCaptureMode mode) {
    SETUP(cudaStreamBeginCapture(f.stream, mode));
    cudaError_t err = cudaSuccess;
    std::thread([&] { err = end_capture(f.stream); }).join();
    if (err != cudaSuccess) SETUP(end_capture(f.stream));
    return err;
}

cudaError_t empty_graph(Fixture &f, cudaGraph_t *graph) {
    const cudaError_t err = cudaStreamBeginCapture(f.stream, cudaStreamCaptureModeThreadLocal);
    return err != cudaSuccess ? err : cudaStreamEndCapture(f.stream, graph);
}

cudaError_t empty_exec(Fixture &f, cudaGraphExec_t *exec) {
    cudaGraph_t graph = nullptr;
    cudaError_t err = empty_graph(f, &graph);
    if (err == cudaSuccess) err = cudaGraphInstantiate(exec, graph);
    if (graph) (void)cudaGraphDestroy(graph);
    return err;
}

/* The launch's error, for copy_kernel with nothing to copy. */
cudaError_t launch_empty(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
    copy_kernel<<<grid, block, smem, stream>>>(nullptr, nullptr, 0);
    return cudaGetLastError();
}

/* What the capture cases do while capturing (during_capture). */
cudaError_t sync_own_stream(Fixture &f) { return cudaStreamSynchronize(f.stream); }
cudaError_t sync_legacy_stream(Fixture &) { return cudaStreamSynchronize(nullptr); }
cudaError_t sync_device(Fixture &) { return cudaDeviceSynchronize(); }
cudaError_t free_dev(Fixture &f) { return cudaFree(f.dev); }
cudaError_t copy_to_dev(Fixture &f) { return cudaMemcpy(f.dev, f.host, 4, cudaMemcpyHostToDevice); }
cudaError_t malloc_and_free(Fixture &) {
    void *p = nullptr;
    const cudaError_t err = cudaMalloc(&p, 4);
    return err != cudaSuccess ? err : cudaFree(p);
}

/* Host to device, device to device, device to host and (inferred) back: the values survive. */
cudaError_t copies_in_every_direction(Fixture &f) {
    constexpr size_t half = kFixtureFloats / 2, bytes = half * sizeof(float);
    for (size_t i = 0; i < half; ++i) f.host[i] = (float)i;
    SETUP(cudaMemcpy(f.dev, f.host, bytes, cudaMemcpyHostToDevice));
    SETUP(cudaMemcpy(f.dev + half, f.dev, bytes, cudaMemcpyDeviceToDevice));
    SETUP(cudaMemcpy(f.host + half, f.dev + half, bytes, cudaMemcpyDeviceToHost));
    SETUP(cudaMemcpy(f.dev, f.host + half, bytes, cudaMemcpyDefault));
    SETUP(cudaMemcpy(f.host, f.dev, bytes, cudaMemcpyDefault));
    for (size_t i = 0; i < half; ++i)
        if (f.host[i] != (float)i || f.host[half + i] != (float)i) f.broken = "a copy changed the values";
    return cudaSuccess;
}

constexpr cudaStreamCaptureMode kGlobal = cudaStreamCaptureModeGlobal,
                                kThreadLocal = cudaStreamCaptureModeThreadLocal,
                                kRelaxed = cudaStreamCaptureModeRelaxed;
constexpr bool kHere = false, kElsewhere = true;

struct Misuse {
    const char *name;
    cudaError_t (*call)(Fixture &);
};

const Misuse kMisuses[] = {
    /* the device */
    {"device_count_null", [](Fixture &) { return cudaGetDeviceCount(nullptr); }},
    {"get_device_null", [](Fixture &) { return cudaGetDevice(nullptr); }},
    {"set_device_1", [](Fixture &) { return cudaSetDevice(1); }},
    {"attribute_null", [](Fixture &) { return cudaDeviceGetAttribute(nullptr, cudaDevAttrMultiProcessorCount, 0); }},
    {"attribute_device_1", [](Fixture &) { int v; return cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 1); }},
    {"attribute_unknown", [](Fixture &) { int v; return cudaDeviceGetAttribute(&v, (cudaDeviceAttr)0, 0); }},
    {"mem_get_info_null", [](Fixture &) { size_t total; return cudaMemGetInfo(nullptr, &total); }},
    {"occupancy_null", [](Fixture &) { return cudaOccupancyMaxActiveBlocksPerMultiprocessor(nullptr, copy_kernel, 256, 0); }},
    {"occupancy_block_0", [](Fixture &) { int b; return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, copy_kernel, 0, 0); }},
    {"occupancy_block_1025", [](Fixture &) { int b; return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, copy_kernel, 1025, 0); }},
    {"occupancy_smem_over_48k", [](Fixture &) { int b; return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, copy_kernel, 256, 48 * 1024 + 1); }},
    {"func_attributes_null", [](Fixture &) { return cudaFuncGetAttributes(nullptr, copy_kernel); }},
    {"func_attributes_ok", [](Fixture &f) {
         cudaFuncAttributes a{};
         const cudaError_t err = cudaFuncGetAttributes(&a, copy_kernel);
         if (err == cudaSuccess && (a.ptxVersion < 50 || a.ptxVersion > a.binaryVersion))
             f.broken = "a ptxVersion outside [50, binaryVersion]";
         return err;
     }},
    {"occupancy_ok", [](Fixture &f) {
         int b = 0;
         const cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, copy_kernel, 1024, 48 * 1024);
         if (err == cudaSuccess && b != 2) f.broken = "not 2 blocks of 1024 threads an SM";
         return err;
     }},
    /* device memory: allocation, freed memory, the ends of a copy */
    {"malloc_null", [](Fixture &) { return cudaMalloc(nullptr, 4); }},
    {"free_twice", [](Fixture &f) { void *p; SETUP(cudaMalloc(&p, 4)); SETUP(cudaFree(p)); return cudaFree(p); }},
    {"free_inside", [](Fixture &f) { return cudaFree(f.dev + 1); }},
    {"memcpy_to_freed", [](Fixture &f) {
         void *p;
         SETUP(cudaMalloc(&p, 4));
         SETUP(cudaFree(p));
         return cudaMemcpy(p, f.host, 4, cudaMemcpyHostToDevice);
     }},
    {"memcpy_h2d_to_host", [](Fixture &f) { return cudaMemcpy(f.host, f.host + 1, 4, cudaMemcpyHostToDevice); }},
    {"memcpy_h2d_from_device", [](Fixture &f) { return cudaMemcpy(f.dev, f.dev + 1, 4, cudaMemcpyHostToDevice); }},
    {"memcpy_d2h_from_host", [](Fixture &f) { return cudaMemcpy(f.host, f.host + 1, 4, cudaMemcpyDeviceToHost); }},
    {"memcpy_d2h_to_device", [](Fixture &f) { return cudaMemcpy(f.dev, f.dev + 1, 4, cudaMemcpyDeviceToHost); }},
    {"memcpy_d2d_from_host", [](Fixture &f) { return cudaMemcpy(f.dev, f.host, 4, cudaMemcpyDeviceToDevice); }},
    {"memcpy_d2d_to_host", [](Fixture &f) { return cudaMemcpy(f.host, f.dev, 4, cudaMemcpyDeviceToDevice); }},
    {"memcpy_h2h_from_device", [](Fixture &f) { return cudaMemcpy(f.host, f.dev, 4, cudaMemcpyHostToHost); }},
    {"memcpy_h2h_to_device", [](Fixture &f) { return cudaMemcpy(f.dev, f.host, 4, cudaMemcpyHostToHost); }},
    {"memcpy_past_the_end", [](Fixture &f) { return cudaMemcpy(f.host, f.dev, sizeof f.host, cudaMemcpyDeviceToHost); }},
    {"memcpy_null", [](Fixture &f) { return cudaMemcpy(nullptr, f.host, 4, cudaMemcpyHostToDevice); }},
    {"memcpy_bad_kind", [](Fixture &f) { return cudaMemcpy(f.dev, f.host, 4, (cudaMemcpyKind)5); }},
    {"memcpy_async_unknown_stream", [](Fixture &f) {
         return cudaMemcpyAsync(f.dev, f.host, 4, cudaMemcpyHostToDevice, bogus<cudaStream_t>(f));
     }},
    {"memcpy_ok", copies_in_every_direction},
    /* streams */
    {"stream_create_null", [](Fixture &) { return cudaStreamCreate(nullptr); }},
    {"stream_create_bad_flags", [](Fixture &) { cudaStream_t s; return cudaStreamCreateWithFlags(&s, 0x2u); }},
    {"stream_destroy_twice", [](Fixture &f) {
         cudaStream_t s;
         SETUP(cudaStreamCreate(&s));
         SETUP(cudaStreamDestroy(s));
         return cudaStreamDestroy(s);
     }},
    {"stream_destroy_capturing", [](Fixture &f) {
         SETUP(cudaStreamBeginCapture(f.stream, kThreadLocal));
         const cudaError_t err = cudaStreamDestroy(f.stream);
         SETUP(end_capture(f.stream));
         return err;
     }},
    {"stream_sync_unknown", [](Fixture &f) { return cudaStreamSynchronize(bogus<cudaStream_t>(f)); }},
    /* stream capture */
    {"capture_null_stream", [](Fixture &) { return cudaStreamBeginCapture(nullptr, kGlobal); }},
    {"capture_legacy_stream", [](Fixture &) { return cudaStreamBeginCapture(cudaStreamLegacy, kGlobal); }},
    {"capture_unknown_stream", [](Fixture &f) { return cudaStreamBeginCapture(bogus<cudaStream_t>(f), kGlobal); }},
    {"capture_bad_mode", [](Fixture &f) { return cudaStreamBeginCapture(f.stream, (cudaStreamCaptureMode)3); }},
    {"capture_twice", [](Fixture &f) {
         SETUP(cudaStreamBeginCapture(f.stream, kThreadLocal));
         const cudaError_t err = cudaStreamBeginCapture(f.stream, kThreadLocal);
         SETUP(end_capture(f.stream));
         return err;
     }},
    {"end_capture_null_graph", [](Fixture &f) {
         SETUP(cudaStreamBeginCapture(f.stream, kThreadLocal));
         const cudaError_t err = cudaStreamEndCapture(f.stream, nullptr);
         SETUP(end_capture(f.stream));
         return err;
     }},
    {"end_capture_unknown_stream", [](Fixture &f) { return end_capture(bogus<cudaStream_t>(f)); }},
    {"end_capture_not_capturing", [](Fixture &f) { return end_capture(f.stream); }},
    {"end_capture_wrong_thread", [](Fixture &f) { return end_capture_elsewhere(f, kThreadLocal); }},
    {"end_capture_relaxed_elsewhere_ok", [](Fixture &f) { return end_capture_elsewhere(f, kRelaxed); }},
    /* calls that would synchronise or allocate during a capture */
    {"stream_sync_in_capture", [](Fixture &f) { return during_capture(f, f.stream, kThreadLocal, kHere, sync_own_stream); }},
    {"legacy_sync_in_capture", [](Fixture &f) { return during_capture(f, f.stream, kThreadLocal, kHere, sync_legacy_stream); }},
    {"device_sync_in_capture", [](Fixture &f) { return during_capture(f, f.stream, kThreadLocal, kHere, sync_device); }},
    {"malloc_in_capture", [](Fixture &f) { return during_capture(f, f.stream, kThreadLocal, kHere, malloc_and_free); }},
    {"free_in_capture", [](Fixture &f) { return during_capture(f, f.stream, kThreadLocal, kHere, free_dev); }},
    {"memcpy_in_capture", [](Fixture &f) { return during_capture(f, f.stream, kThreadLocal, kHere, copy_to_dev); }},
    {"malloc_in_per_thread_capture", [](Fixture &f) {
         return during_capture(f, cudaStreamPerThread, kThreadLocal, kHere, malloc_and_free);
     }},
    {"malloc_beside_global_capture", [](Fixture &f) { return during_capture(f, f.stream, kGlobal, kElsewhere, malloc_and_free); }},
    {"malloc_in_relaxed_capture_ok", [](Fixture &f) { return during_capture(f, f.stream, kRelaxed, kHere, malloc_and_free); }},
    {"malloc_beside_thread_local_capture_ok", [](Fixture &f) {
         return during_capture(f, f.stream, kThreadLocal, kElsewhere, malloc_and_free);
     }},
    {"malloc_after_a_capturing_thread_exited_ok", [](Fixture &f) {
         /* A global capture of a thread's per-thread stream ends with the thread: it no
          * longer refuses other threads' allocations (nor points into the dead thread). */
         cudaError_t begun = cudaSuccess;
         std::thread([&] { begun = cudaStreamBeginCapture(cudaStreamPerThread, kGlobal); }).join();
         SETUP(begun);
         return malloc_and_free(f);
     }},
    /* graphs */
    {"instantiate_null", [](Fixture &f) {
         cudaGraph_t g;
         SETUP(empty_graph(f, &g));
         const cudaError_t err = cudaGraphInstantiate(nullptr, g);
         SETUP(cudaGraphDestroy(g));
         return err;
     }},
    {"instantiate_destroyed_graph", [](Fixture &f) {
         cudaGraph_t g;
         cudaGraphExec_t x;
         SETUP(empty_graph(f, &g));
         SETUP(cudaGraphDestroy(g));
         return cudaGraphInstantiate(&x, g);
     }},
    {"graph_destroy_twice", [](Fixture &f) {
         cudaGraph_t g;
         SETUP(empty_graph(f, &g));
         SETUP(cudaGraphDestroy(g));
         return cudaGraphDestroy(g);
     }},
    {"graph_launch_destroyed", [](Fixture &f) {
         cudaGraphExec_t x;
         SETUP(empty_exec(f, &x));
         SETUP(cudaGraphExecDestroy(x));
         return cudaGraphLaunch(x, f.stream);
     }},
    {"graph_launch_unknown_stream", [](Fixture &f) {
         cudaGraphExec_t x;
         SETUP(empty_exec(f, &x));
         const cudaError_t err = cudaGraphLaunch(x, bogus<cudaStream_t>(f));
         SETUP(cudaGraphExecDestroy(x));
         return err;
     }},
    {"graph_exec_destroy_twice", [](Fixture &f) {
         cudaGraphExec_t x;
         SETUP(empty_exec(f, &x));
         SETUP(cudaGraphExecDestroy(x));
         return cudaGraphExecDestroy(x);
     }},
    /* events */
    {"event_create_null", [](Fixture &) { return cudaEventCreate(nullptr); }},
    {"event_destroy_twice", [](Fixture &f) {
         cudaEvent_t e;
         SETUP(cudaEventCreate(&e));
         SETUP(cudaEventDestroy(e));
         return cudaEventDestroy(e);
     }},
    {"event_record_unknown", [](Fixture &f) { return cudaEventRecord(bogus<cudaEvent_t>(f), f.stream); }},
    {"event_record_unknown_stream", [](Fixture &f) { return cudaEventRecord(f.start, bogus<cudaStream_t>(f)); }},
    {"event_sync_unknown", [](Fixture &f) { return cudaEventSynchronize(bogus<cudaEvent_t>(f)); }},
    {"elapsed_null", [](Fixture &f) { return cudaEventElapsedTime(nullptr, f.start, f.end); }},
    {"elapsed_unknown", [](Fixture &f) { float ms; return cudaEventElapsedTime(&ms, f.start, bogus<cudaEvent_t>(f)); }},
    {"elapsed_unrecorded", [](Fixture &f) {
         float ms;
         SETUP(cudaEventRecord(f.start, f.stream));
         return cudaEventElapsedTime(&ms, f.start, f.end);
     }},
    {"elapsed_ok", [](Fixture &f) {
         float ms = -1.f;
         SETUP(cudaEventRecord(f.start, f.stream));
         SETUP(cudaEventRecord(f.end, f.stream));
         const cudaError_t err = cudaEventElapsedTime(&ms, f.start, f.end);
         if (err == cudaSuccess && !(ms >= 0.f)) f.broken = "a negative time";
         return err;
     }},
    /* launch configurations: each limit, just over it (and, in the twin, at it) */
    {"launch_block_0", [](Fixture &) { return launch_empty(1, 0u); }},
    {"launch_block_1025", [](Fixture &) { return launch_empty(1, 1025); }},
    {"launch_block_z_65", [](Fixture &) { return launch_empty(1, dim3(1, 1, 65)); }},
    {"launch_grid_x_0", [](Fixture &) { return launch_empty(0u, 1); }},
    {"launch_grid_x_2p31", [](Fixture &) { return launch_empty(1u << 31, 1); }},
    {"launch_grid_y_0", [](Fixture &) { return launch_empty(dim3(1, 0), 1); }},
    {"launch_grid_y_65536", [](Fixture &) { return launch_empty(dim3(1, 65536), 1); }},
    {"launch_grid_z_0", [](Fixture &) { return launch_empty(dim3(1, 1, 0), 1); }},
    {"launch_grid_z_65536", [](Fixture &) { return launch_empty(dim3(1, 1, 65536), 1); }},
    {"launch_dynamic_smem", [](Fixture &) { return launch_empty(1, 32, 4); }},   /* extern __shared__: not emulated */
    {"launch_unknown_stream", [](Fixture &f) { return launch_empty(1, 32, 0, bogus<cudaStream_t>(f)); }},
    {"launch_at_limits_ok", [](Fixture &f) {
         SETUP(launch_empty(1, 1024));
         SETUP(launch_empty(1, dim3(1, 1, 64)));
         SETUP(launch_empty(dim3(1, 65535), 1));
         SETUP(launch_empty(dim3(1, 1, 65535), 1));
         return cudaSuccess;
     }},
};

#undef SETUP

acn_status run_misuse(const Misuse &m) {
    Fixture f;
    DeviceBuffers mem;
    ACN_TRY(mem.alloc(&f.dev, kFixtureFloats, "self-test memory"));
    ACN_CUDA_TRY(cudaStreamCreate(&f.stream), "self-test stream");
    ACN_CUDA_TRY(cudaEventCreate(&f.start), "self-test event");
    ACN_CUDA_TRY(cudaEventCreate(&f.end), "self-test event");
    const cudaError_t err = m.call(f);
    /* All three, whatever the first answer; the stream's fails where the case left it capturing. */
    const bool tidy = (cudaEventDestroy(f.start) == cudaSuccess) & (cudaEventDestroy(f.end) == cudaSuccess) &
                      (cudaStreamDestroy(f.stream) == cudaSuccess);
    (void)cudaGetLastError();   /* the refusal is err: nothing is left for a later check */
    if (!tidy && !f.broken) f.broken = "its stream and events could not be destroyed after it";
    if (f.broken) return cuda_fail_msg(ACN_ECUDA, "%s: %s", m.name, f.broken);
    if (err != cudaSuccess) return cuda_fail(err, m.name);
    const size_t len = strlen(m.name);
    const bool twin = len > 3 && !strcmp(m.name + len - 3, "_ok");
    return twin ? ACN_OK : cuda_fail_msg(ACN_ECUDA, "%s: the runtime accepted it", m.name);
}

acn_status run(const char *name, float *out_host, size_t n, cudaStream_t stream) {
    for (const Misuse &m : kMisuses)
        if (!strcmp(name, m.name)) return run_misuse(m);
    DeviceBuffers mem;
    float *d_out, *d_in;
    int v;
    ACN_TRY(mem.alloc(&d_out, n, "self-test output"));
    if (!strcmp(name, "rotate") || !strcmp(name, "rotate_without_barrier")) {
        if (n % kRotate) return cuda_fail_msg(ACN_EINVAL, "rotate: n must be a multiple of %d", kRotate);
        rotate_kernel<<<(unsigned)(n / kRotate), kRotate, 0, stream>>>(d_out, !strcmp(name, "rotate"));
    } else if (!strcmp(name, "divergent_barrier")) {
        divergent_barrier_kernel<<<1, (unsigned)n, 0, stream>>>(d_out);
    } else if (!strcmp(name, "barrier_after_return")) {
        barrier_after_return_kernel<<<1, (unsigned)n, 0, stream>>>(d_out);
    } else if (!strcmp(name, "warp_sum")) {
        warp_sum_kernel<<<1, (unsigned)n, 0, stream>>>(d_out);
    } else if ((v = variant(name, kWarpTests)) >= 0) {
        warp_kernel<<<1, (unsigned)n, 0, stream>>>(d_out, v);
    } else if ((v = variant(name, kSharedTests)) >= 0) {
        shared_kernel<<<1, (unsigned)n, 0, stream>>>(d_out, v);
    } else if ((v = variant(name, kWmmaTests)) >= 0) {
        if (n != 256) return cuda_fail_msg(ACN_EINVAL, "%s: n must be 256", name);
        wmma_kernel<<<1, v == kWmmaHalfWarp ? 16u : 32u, 0, stream>>>(d_out, v);
    } else if (!strcmp(name, "launch_bound")) {
        if (n < 1 || n > 1024) return cuda_fail_msg(ACN_EINVAL, "launch_bound: n must be 1 to 1024");
        launch_bound_kernel<<<1, (unsigned)n, 0, stream>>>(d_out);
    } else if (!strcmp(name, "fresh_memory")) {
        /* A copy of memory that nothing wrote. */
        ACN_TRY(mem.alloc(&d_in, n, "self-test input"));
        copy_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(d_out, d_in, (int)n);
    } else if (!strcmp(name, "overrun_device") || !strcmp(name, "overrun_shared")) {
        if (n != kWarp) return cuda_fail_msg(ACN_EINVAL, "%s: n must be %d", name, kWarp);
        ACN_TRY(mem.alloc(&d_in, n, "self-test input"));
        overrun_kernel<<<1, kWarp, 0, stream>>>(d_out, d_in, !strcmp(name, "overrun_shared"));
    } else if (!strcmp(name, "misaligned_float4")) {
        /* float4 loads from one float past an aligned address: UBSan (ALEXNET_C_SANITIZE=1)
         * must report it; in other builds the compiler's aligned vector loads make the
         * process die of SIGSEGV, as a GPU faults. */
        if (n % 4 || n / 4 > 1024) return cuda_fail_msg(ACN_EINVAL, "misaligned_float4: n must be 4k, k <= 1024");
        ACN_TRY(mem.alloc(&d_in, n + 1, "self-test input"));
        float ramp[4096 + 1];
        for (size_t i = 0; i <= n; ++i) ramp[i] = (float)i;
        ACN_CUDA_TRY(cudaMemcpyAsync(d_in, ramp, (n + 1) * sizeof(float), cudaMemcpyHostToDevice, stream),
                     "self-test input");
        float4_copy_kernel<<<1, (unsigned)(n / 4), 0, stream>>>(reinterpret_cast<float4 *>(d_out),
                                                                 reinterpret_cast<const float4 *>(d_in + 1));
    } else {
        return cuda_fail_msg(ACN_EINVAL, "unknown self-test %s", name);
    }
    ACN_TRY(check_launch(name));
    return download_and_wait(out_host, d_out, n, stream);
}

}  // namespace
}  // namespace acn

extern "C" int acn_emu_selftest(const char *name, float *out_host, size_t n) {
    return acn::run(name, out_host, n, acn::host_call_stream());
}
