/* selftest.cu: kernels with the mistakes the CUDA emulator is there to catch, and one
 * correct twin of each, for tests/test_cuda_emulator.py (through _C._emu_selftest).
 * Built into ALEXNET_C_CUDA=emulate builds only; a GPU build never sees this file.
 *
 * A check that never fires proves nothing, so each of the emulator's checks is shown
 * here failing on a kernel that is wrong in exactly that way.
 */
#include <mma.h>
#include <string.h>

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

enum WmmaMistake { kWmmaNone, kWmmaUnrounded, kWmmaMisaligned };

/* out (16,16) = A B + 1 on the tensor-core API, one warp: A[r][k] = r + k, B[k][c] = k - c
 * (small integers, exact in TF32). The mistakes: an A element that is no TF32 value
 * (never passed through __float_to_tf32), and A loaded from 4 bytes past an aligned
 * address. A block of 16 threads is the third: a warp collective in a partial warp. */
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
    wmma::load_matrix_sync(a, mistake == kWmmaMisaligned ? A + 1 : A, 8);
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

acn_status run(const char *name, float *out_host, size_t n, cudaStream_t stream) {
    DeviceBuffers mem;
    float *d_out, *d_in;
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
    } else if (!strncmp(name, "wmma", 4)) {
        if (n != 256) return cuda_fail_msg(ACN_EINVAL, "%s: n must be 256", name);
        const int mistake = !strcmp(name, "wmma_unrounded") ? kWmmaUnrounded
                            : !strcmp(name, "wmma_misaligned") ? kWmmaMisaligned : kWmmaNone;
        if (mistake == kWmmaNone && strcmp(name, "wmma") && strcmp(name, "wmma_half_warp"))
            return cuda_fail_msg(ACN_EINVAL, "unknown self-test %s", name);
        wmma_kernel<<<1, !strcmp(name, "wmma_half_warp") ? 16u : 32u, 0, stream>>>(d_out, mistake);
    } else if (!strcmp(name, "launch_bound")) {
        if (n < 1 || n > 1024) return cuda_fail_msg(ACN_EINVAL, "launch_bound: n must be 1 to 1024");
        launch_bound_kernel<<<1, (unsigned)n, 0, stream>>>(d_out);
    } else if (!strcmp(name, "fresh_memory")) {
        /* A copy of memory that nothing wrote. */
        ACN_TRY(mem.alloc(&d_in, n, "self-test input"));
        copy_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(d_out, d_in, (int)n);
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
    } else if (!strcmp(name, "sync_in_capture")) {
        /* A stream synchronisation while the stream captures: the real runtime refuses
         * it and invalidates the capture; so must the emulator. */
        cudaStream_t s = nullptr;
        ACN_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
        ACN_CUDA_TRY(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        copy_kernel<<<1, 32, 0, s>>>(d_out, d_out, 0);
        const cudaError_t sync = cudaStreamSynchronize(s);
        cudaGraph_t graph = nullptr;
        const cudaError_t end = cudaStreamEndCapture(s, &graph);
        (void)cudaGetLastError();
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaStreamDestroy(s);
        if (sync != cudaErrorStreamCaptureUnsupported || end != cudaErrorStreamCaptureInvalidated)
            return cuda_fail_msg(ACN_ECUDA, "sync_in_capture: synchronize gave %s, end of capture %s",
                                 cudaGetErrorName(sync), cudaGetErrorName(end));
        return ACN_OK;   /* refused and invalidated, as it should be; out_host untouched */
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
