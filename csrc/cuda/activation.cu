/* activation.cu: relu, softmax and log_softmax.
 *
 * relu is a pure streaming kernel (16-byte loads and stores where aligned).
 * softmax / log_softmax reduce over D of an (outer, D, inner) view, numerically
 * stable like PyTorch: m = max x, s = sum exp(x - m), then exp(x - m) / s or
 * x - m - log(s). expf / logf are the precise ones (no fast-math in this build).
 * NaN: fmaxf skips it in the max, but exp(NaN - m) makes s NaN, so the whole row is
 * NaN, as in PyTorch.
 */
#include <math.h>

#include "cuda_common.cuh"

namespace acn {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 65535u * 8u;

unsigned grid_for(size_t work) {
    const size_t blocks = (work + kThreads - 1) / kThreads;
    return blocks == 0 ? 1u : blocks < kMaxBlocks ? (unsigned)blocks : kMaxBlocks;
}

/* out (n), inp (n); out may equal inp. The first n4 elements go as float4 (both
 * pointers 16-byte aligned when n4 > 0), the rest one by one. */
__global__ void __launch_bounds__(kThreads)
relu_kernel(float *out, const float *inp, size_t n, size_t n4) {
    const size_t stride = (size_t)gridDim.x * kThreads;
    const size_t first = (size_t)blockIdx.x * kThreads + threadIdx.x;
    for (size_t i = first; i < n4; i += stride) {
        /* A plain load, not __ldg: relu_host_cuda runs in place (out == inp), and data
         * read through the non-coherent path must not be written during the kernel. */
        float4 v = reinterpret_cast<const float4 *>(inp)[i];
        v.x = relu_keep_nan(v.x);
        v.y = relu_keep_nan(v.y);
        v.z = relu_keep_nan(v.z);
        v.w = relu_keep_nan(v.w);
        reinterpret_cast<float4 *>(out)[i] = v;
    }
    for (size_t i = n4 * 4 + first; i < n; i += stride) out[i] = relu_keep_nan(inp[i]);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = kWarp / 2; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

/* Sum or max over the block, returned to every thread. scratch: kThreads / kWarp
 * floats of shared memory; the trailing barrier lets the next call reuse it. */
template <bool MAX>
__device__ float block_reduce(float v, float *scratch) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    v = MAX ? warp_max(v) : warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < kThreads / kWarp ? scratch[lane] : (MAX ? -INFINITY : 0.f);
        v = MAX ? warp_max(v) : warp_sum(v);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    const float r = scratch[0];
    __syncthreads();
    return r;
}

/* inner == 1 (logits (N, classes)): one block per row of D contiguous floats. */
template <bool LOG>
__global__ void __launch_bounds__(kThreads)
softmax_rows_kernel(float *out, const float *inp, size_t outer, size_t D) {
    __shared__ float scratch[kThreads / kWarp];
    for (size_t row = blockIdx.x; row < outer; row += gridDim.x) {
        const float *x = inp + row * D;
        float *y = out + row * D;
        float m = -INFINITY;
        for (size_t i = threadIdx.x; i < D; i += kThreads) m = fmaxf(m, x[i]);
        m = block_reduce<true>(m, scratch);
        float s = 0.f;
        for (size_t i = threadIdx.x; i < D; i += kThreads) s += expf(x[i] - m);
        s = block_reduce<false>(s, scratch);
        if (LOG) {
            const float log_s = logf(s);
            for (size_t i = threadIdx.x; i < D; i += kThreads) y[i] = (x[i] - m) - log_s;
        } else {
            for (size_t i = threadIdx.x; i < D; i += kThreads) y[i] = expf(x[i] - m) / s;
        }
    }
}

/* inner > 1: one thread per (o, j) column, walking D with stride inner, the CPU
 * kernel's loop order; neighbouring threads read neighbouring j. */
template <bool LOG>
__global__ void __launch_bounds__(kThreads)
softmax_cols_kernel(float *out, const float *inp, size_t outer, size_t D, size_t inner) {
    const size_t cols = outer * inner;
    for (size_t col = (size_t)blockIdx.x * kThreads + threadIdx.x; col < cols;
         col += (size_t)gridDim.x * kThreads) {
        const size_t o = col / inner, j = col % inner;
        const float *x = inp + o * D * inner + j;
        float *y = out + o * D * inner + j;
        float m = -INFINITY;
        for (size_t d = 0; d < D; ++d) m = fmaxf(m, x[d * inner]);
        float s = 0.f;
        for (size_t d = 0; d < D; ++d) s += expf(x[d * inner] - m);
        if (LOG) {
            const float log_s = logf(s);
            for (size_t d = 0; d < D; ++d) y[d * inner] = (x[d * inner] - m) - log_s;
        } else {
            for (size_t d = 0; d < D; ++d) y[d * inner] = expf(x[d * inner] - m) / s;
        }
    }
}

template <bool LOG>
acn_status softmax_launch(float *out, const float *inp, size_t outer, size_t D, size_t inner,
                          cudaStream_t stream) {
    const char *name = LOG ? "log_softmax kernel" : "softmax kernel";
    if (outer == 0 || D == 0 || inner == 0) return ACN_OK;
    if (inner == 1) {
        const unsigned blocks = outer < kMaxBlocks ? (unsigned)outer : kMaxBlocks;
        softmax_rows_kernel<LOG><<<blocks, kThreads, 0, stream>>>(out, inp, outer, D);
    } else {
        softmax_cols_kernel<LOG><<<grid_for(outer * inner), kThreads, 0, stream>>>(
            out, inp, outer, D, inner);
    }
    return check_launch(name);
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* The host wrappers' common path: upload, run, download. */
template <bool LOG>
int softmax_host(float *out, const float *inp, size_t outer, size_t D, size_t inner) {
    if (outer == 0 || D == 0 || inner == 0) return ACN_OK;
    if (outer > SIZE_MAX / D / inner) return cuda_fail_msg(ACN_EINVAL, "softmax: sizes overflow");
    const size_t n = outer * D * inner;
    const cudaStream_t stream = host_call_stream();
    DeviceBuffers mem;
    float *d_inp, *d_out;
    ACN_TRY(mem.upload(&d_inp, inp, n, stream, LOG ? "log_softmax input" : "softmax input"));
    ACN_TRY(mem.alloc(&d_out, n, LOG ? "log_softmax output" : "softmax output"));
    ACN_TRY(softmax_launch<LOG>(d_out, d_inp, outer, D, inner, stream));
    return download_and_wait(out, d_out, n, stream);
}

}  // namespace

acn_status relu_forward_cuda(float *out, const float *inp, size_t n, cudaStream_t stream) {
    if (n == 0) return ACN_OK;
    const size_t n4 = aligned16(out) && aligned16(inp) ? n / 4 : 0;
    relu_kernel<<<grid_for(n4 ? n4 : n), kThreads, 0, stream>>>(out, inp, n, n4);
    return check_launch("relu kernel");
}

acn_status softmax_forward_cuda(float *out, const float *inp, size_t outer, size_t D,
                                size_t inner, cudaStream_t stream) {
    return softmax_launch<false>(out, inp, outer, D, inner, stream);
}

acn_status log_softmax_forward_cuda(float *out, const float *inp, size_t outer, size_t D,
                                    size_t inner, cudaStream_t stream) {
    return softmax_launch<true>(out, inp, outer, D, inner, stream);
}

}  // namespace acn

extern "C" int relu_host_cuda(float *out, const float *inp, size_t n) {
    using namespace acn;
    if (n == 0) return ACN_OK;
    const cudaStream_t stream = host_call_stream();
    DeviceBuffers mem;
    float *d_inp;
    ACN_TRY(mem.upload(&d_inp, inp, n, stream, "relu input"));
    /* In place on the device: one buffer instead of two. */
    ACN_TRY(relu_forward_cuda(d_inp, d_inp, n, stream));
    return download_and_wait(out, d_inp, n, stream);
}

extern "C" int softmax_host_cuda(float *out, const float *inp, size_t outer, size_t D,
                                 size_t inner) {
    return acn::softmax_host<false>(out, inp, outer, D, inner);
}

extern "C" int log_softmax_host_cuda(float *out, const float *inp, size_t outer, size_t D,
                                     size_t inner) {
    return acn::softmax_host<true>(out, inp, outer, D, inner);
}
