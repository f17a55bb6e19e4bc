/* cuda_common.cuh: what the CUDA sources share and nothing outside csrc/cuda sees.
 *
 * - error reporting: a failed CUDA call becomes an acn_status, with its text kept in a
 *   thread-local buffer that cuda_last_error() returns (runtime.cu);
 * - DeviceBuffers: the *_host_cuda functions' scratch memory, freed on every return path;
 * - FastDiv: division by a divisor fixed at launch, for the index arithmetic in kernels;
 * - the device-pointer launchers (*_forward_cuda) that the host wrappers and the
 *   network call. They take a stream, check their launch, and never synchronise.
 */
#ifndef ALEXNET_C_CUDA_COMMON_CUH
#define ALEXNET_C_CUDA_COMMON_CUH

#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

#include "alexnet_c.h"

namespace acn {

/* ---- errors (runtime.cu) ------------------------------------------------ */

/* Records "what: <CUDA's text> (<error name>)" for cuda_last_error(), clears the
 * error if it is not sticky so the next call starts clean, and returns
 * ACN_ECUDA_OOM for cudaErrorMemoryAllocation, ACN_ENODEV when there is no device,
 * no (new enough) driver or no kernel image for this GPU, else ACN_ECUDA. */
acn_status cuda_fail(cudaError_t err, const char *what);
/* Records a printf-style message and returns status (for ACN_EINVAL and friends). */
acn_status cuda_fail_msg(acn_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* cudaGetLastError() after a launch: a bad configuration or a missing kernel image
 * shows up here, not at the launch itself. */
acn_status check_launch(const char *kernel);
/* status, after waiting for stream where status is a failure. Work queued before the
 * failure may still read or write the buffers the caller frees or reuses next (the
 * net's workspace, grown by the next forward); the first failure's message stays the
 * one reported: the wait's own error, if any, is cleared, not recorded. */
acn_status wait_if_failed(acn_status status, cudaStream_t stream);

#define ACN_CUDA_TRY(call, what)                                  \
    do {                                                          \
        cudaError_t acn_err_ = (call);                            \
        if (acn_err_ != cudaSuccess) return ::acn::cuda_fail(acn_err_, what); \
    } while (0)

#define ACN_TRY(expr)                                             \
    do {                                                          \
        acn_status acn_st_ = (expr);                              \
        if (acn_st_ != ACN_OK) return acn_st_;                    \
    } while (0)

/* Multiprocessors of the current device, cached per device (the tile choice of the
 * GEMM needs it on every launch, and a query during graph capture is best avoided). */
int sm_count(void);

/* How the GEMMs (convolutions, linear layers) multiply. Float32: fp32 FMAs, the parity
 * path. Tf32: tensor cores, A and B rounded to TF32 (10-bit mantissa), float sums. */
enum class Precision { Float32, Tf32 };
/* ACN_OK when the current device has TF32 tensor cores (compute capability >= 8.0,
 * cached per device like sm_count); else ACN_EUNSUPPORTED with a message saying so, or
 * the failed query's error, named `what`. */
acn_status check_tf32(const char *what);

/* ---- scratch memory of the *_host_cuda functions ------------------------ */

/* Owns up to 4 device allocations; the destructor frees them, so every early return
 * of a host wrapper releases what it took. A failed cudaFree (a context already lost
 * to a sticky error) is ignored: the error was already reported. The destructor first
 * waits for the stream of the uploads: an early return after a failed launch or copy
 * leaves the earlier copies and kernels (the host wrappers queue all on that stream)
 * still using the buffers it is about to free. */
class DeviceBuffers {
public:
    DeviceBuffers() = default;
    DeviceBuffers(const DeviceBuffers &) = delete;
    DeviceBuffers &operator=(const DeviceBuffers &) = delete;
    ~DeviceBuffers();
    /* *ptr = cudaMalloc(count elements), or NULL when count == 0. */
    template <class T>
    acn_status alloc(T **ptr, size_t count, const char *what) {
        void *p = nullptr;
        const acn_status st = alloc_bytes(&p, count, sizeof(T), what);
        *ptr = static_cast<T *>(p);
        return st;
    }
    /* alloc + cudaMemcpyAsync from the host on stream. */
    acn_status upload(float **ptr, const float *host, size_t count, cudaStream_t stream,
                      const char *what);

private:
    acn_status alloc_bytes(void **ptr, size_t count, size_t size, const char *what);
    void *ptrs_[4] = {nullptr, nullptr, nullptr, nullptr};
    int n_ = 0;
    cudaStream_t stream_ = nullptr;
    bool queued_ = false;   /* upload was called: work may be queued on stream_ */
};

/* The stream of the *_host_cuda functions: the calling thread's own, so host threads
 * calling ops at once do not queue behind each other on the legacy default stream. */
inline cudaStream_t host_call_stream(void) { return cudaStreamPerThread; }

/* Copies count floats back to the host on stream and waits for the stream: the end
 * of every *_host_cuda function. A kernel that faulted reports here. */
acn_status download_and_wait(float *host, const float *dev, size_t count, cudaStream_t stream);

/* ---- index arithmetic --------------------------------------------------- */

/* n / d and n % d for 0 <= n < 2^31 with a multiply-high instead of a division
 * (an integer division is a ~20-instruction sequence on the GPU, and the implicit
 * GEMM does two per loaded element). Round-up method: l = ceil(log2 d),
 * mul = floor(2^32 (2^l - d) / d) + 1, q = (umulhi(n, mul) + n) >> l; the sum stays
 * below 2^32 because n and umulhi(n, mul) are both below 2^31. */
struct FastDiv {
    unsigned d, mul, shift;

    FastDiv() : d(1), mul(1), shift(0) {}
    explicit FastDiv(int divisor) {
        d = divisor < 1 ? 1u : (unsigned)divisor;
        shift = 0;
        while ((1ull << shift) < d) ++shift;
        mul = (unsigned)((((1ull << 32) * ((1ull << shift) - d)) / d) + 1);
    }
    __device__ __forceinline__ int div(int n) const {
        return (int)((__umulhi((unsigned)n, mul) + (unsigned)n) >> shift);
    }
    __device__ __forceinline__ void divmod(int n, int &q, int &r) const {
        q = div(n);
        r = n - q * (int)d;
    }
};

/* ---- device-pointer launchers -------------------------------------------
 * Same arguments as the CPU kernels in alexnet_c.h, all pointers on the device,
 * plus the stream to launch on. They validate sizes against the kernels' 32-bit index
 * arithmetic (ACN_EINVAL with a message), launch, and check the launch. */

/* out (N,OC,OH,OW), inp (N,C,H,W), weight (OC,C/groups,KH,KW), bias (OC) or NULL. */
acn_status conv2d_forward_cuda(float *out, const float *inp, const float *weight,
                               const float *bias, int N, int C, int H, int W, int OC,
                               int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                               int groups, int relu, Precision precision, cudaStream_t stream);
/* out (N*C,OH,OW), indices (N*C,OH,OW) or NULL, inp (N*C,H,W). */
acn_status max_pool2d_forward_cuda(float *out, int64_t *indices, const float *inp, int NC,
                                   int H, int W, int KH, int KW, int SH, int SW, int PH,
                                   int PW, int DH, int DW, int OH, int OW, cudaStream_t stream);
acn_status adaptive_avg_pool2d_forward_cuda(float *out, const float *inp, int NC, int H,
                                            int W, int OH, int OW, cudaStream_t stream);
/* out (N,O), inp (N,I), weight (O,I), bias (O) or NULL. */
acn_status linear_forward_cuda(float *out, const float *inp, const float *weight,
                               const float *bias, int N, int I, int O, int relu,
                               Precision precision, cudaStream_t stream);
acn_status relu_forward_cuda(float *out, const float *inp, size_t n, cudaStream_t stream);
/* inp viewed as (outer, D, inner), reduced over D. */
acn_status softmax_forward_cuda(float *out, const float *inp, size_t outer, size_t D,
                                size_t inner, cudaStream_t stream);
acn_status log_softmax_forward_cuda(float *out, const float *inp, size_t outer, size_t D,
                                    size_t inner, cudaStream_t stream);

/* ---- small shared helpers ----------------------------------------------- */

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* ReLU that keeps NaN, as torch.relu does: NaN < 0 is false. */
__device__ __forceinline__ float relu_keep_nan(float v) { return v < 0.f ? 0.f : v; }

inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

}  // namespace acn

#endif
