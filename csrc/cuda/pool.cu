/* pool.cu: max_pool2d and adaptive_avg_pool2d, one thread per output element.
 *
 * Both are bound by memory traffic, not arithmetic: a flat grid over all N*C*OH*OW
 * outputs keeps every thread busy even for the 6x6 and 13x13 maps (a grid over planes
 * would idle most of a block). Each thread runs the CPU kernel's inner loops for its
 * (nc, oh, ow); neighbouring threads read neighbouring input columns.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "cuda_common.cuh"

namespace acn {
namespace {

constexpr int kThreads = 256;
/* Enough blocks to fill any current GPU several times over; the kernels loop beyond. */
constexpr unsigned kMaxBlocks = 65535u * 8u;
constexpr size_t kIntTotalMax = (size_t)INT_MAX - (size_t)kMaxBlocks * kThreads;

/* Idx is int when N*C*OH*OW (plus one grid stride, so the loop cannot overflow)
 * fits, so the index split costs 32-bit divisions; size_t beyond.
 * The window's loops are the CPU kernel's (max_pool2d_forward_cpu), so that ties and
 * NaN give the same index: the first tap inside the plane to start, then any greater
 * value or any NaN. indices (a branch the whole grid takes alike) may be NULL. */
template <typename Idx>
__global__ void __launch_bounds__(kThreads)
max_pool2d_kernel(float *out, int64_t *indices, const float *inp, Idx total, int H, int W,
                  int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int OH,
                  int OW) {
    for (Idx idx = (Idx)blockIdx.x * kThreads + threadIdx.x; idx < total;
         idx += (Idx)gridDim.x * kThreads) {
        const int ow = (int)(idx % OW);
        const int oh = (int)(idx / OW % OH);
        const Idx nc = idx / OW / OH;
        const float *plane = inp + (size_t)nc * H * W;
        int hs = oh * SH - PH, ws = ow * SW - PW;
        int he = hs + (KH - 1) * DH + 1, we = ws + (KW - 1) * DW + 1;
        if (he > H) he = H;
        if (we > W) we = W;
        while (hs < 0) hs += DH;
        while (ws < 0) ws += DW;
        /* Padding is -inf: it never wins. NaN wins, as in PyTorch. */
        float m = -INFINITY;
        /* 64-bit: a window with no tap in the plane reports where it would start, and
         * one plane may hold more than 2**31 pixels while the output index fits an int. */
        long long at = (long long)hs * W + ws;
        for (int ih = hs; ih < he; ih += DH)
            for (int iw = ws; iw < we; iw += DW) {
                const float v = __ldg(plane + (size_t)ih * W + iw);
                if (v > m || isnan(v)) {
                    m = v;
                    at = (long long)ih * W + iw;
                }
            }
        out[idx] = m;
        if (indices) indices[idx] = at;
    }
}

/* Window rows [floor(oh*H/OH), ceil((oh+1)*H/OH)), columns likewise. */
template <typename Idx>
__global__ void __launch_bounds__(kThreads)
adaptive_avg_pool2d_kernel(float *out, const float *inp, Idx total, int H, int W, int OH,
                           int OW) {
    for (Idx idx = (Idx)blockIdx.x * kThreads + threadIdx.x; idx < total;
         idx += (Idx)gridDim.x * kThreads) {
        const int ow = (int)(idx % OW);
        const int oh = (int)(idx / OW % OH);
        const Idx nc = idx / OW / OH;
        const float *plane = inp + (size_t)nc * H * W;
        const int h0 = (int)((long long)oh * H / OH);
        const int h1 = (int)(((long long)(oh + 1) * H + OH - 1) / OH);
        const int w0 = (int)((long long)ow * W / OW);
        const int w1 = (int)(((long long)(ow + 1) * W + OW - 1) / OW);
        // In double, as on the CPU (cpu/pool.c says why); ih * W in size_t, as one plane
        // may hold more than 2**31 pixels while the output index fits an int.
        double sum = 0.0;
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) sum += __ldg(plane + (size_t)ih * W + iw);
        out[idx] = (float)(sum / ((double)(h1 - h0) * (w1 - w0)));
    }
}

unsigned grid_for(size_t total) {
    const size_t blocks = (total + kThreads - 1) / kThreads;
    return blocks < kMaxBlocks ? (unsigned)blocks : kMaxBlocks;
}

}  // namespace

acn_status max_pool2d_forward_cuda(float *out, int64_t *indices, const float *inp, int NC,
                                   int H, int W, int KH, int KW, int SH, int SW, int PH,
                                   int PW, int DH, int DW, int OH, int OW, cudaStream_t stream) {
    /* The window's ends, (OH-1)*SH - PH + (KH-1)*DH + 1, are computed in int; a padding
     * above half the kernel (torch's rule, checked by module.c too) would let a window lie
     * wholly in the padding, and the kernel's walk to its first row take PH steps. */
    if (NC < 0 || H < 1 || W < 1 || KH < 1 || KW < 1 || SH < 1 || SW < 1 || PH < 0 || PW < 0 ||
        PH > KH / 2 || PW > KW / 2 ||
        DH < 1 || DW < 1 || OH < 0 || OW < 0 || (long long)H * W > INT_MAX ||
        (long long)(OH - 1) * SH + (long long)KH * DH > INT_MAX ||
        (long long)(OW - 1) * SW + (long long)KW * DW > INT_MAX)
        return cuda_fail_msg(ACN_EINVAL, "max_pool2d: invalid sizes");
    const size_t total = (size_t)NC * OH * OW;
    if (total == 0) return ACN_OK;
    if (total <= kIntTotalMax)
        max_pool2d_kernel<int><<<grid_for(total), kThreads, 0, stream>>>(
            out, indices, inp, (int)total, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW);
    else
        max_pool2d_kernel<size_t><<<grid_for(total), kThreads, 0, stream>>>(
            out, indices, inp, total, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW);
    return check_launch("max_pool2d kernel");
}

acn_status adaptive_avg_pool2d_forward_cuda(float *out, const float *inp, int NC, int H,
                                            int W, int OH, int OW, cudaStream_t stream) {
    if (NC < 0 || H < 1 || W < 1 || OH < 0 || OW < 0 || (long long)H * W > INT_MAX)
        return cuda_fail_msg(ACN_EINVAL, "adaptive_avg_pool2d: invalid sizes");
    const size_t total = (size_t)NC * OH * OW;
    if (total == 0) return ACN_OK;
    if (total <= kIntTotalMax)
        adaptive_avg_pool2d_kernel<int><<<grid_for(total), kThreads, 0, stream>>>(
            out, inp, (int)total, H, W, OH, OW);
    else
        adaptive_avg_pool2d_kernel<size_t><<<grid_for(total), kThreads, 0, stream>>>(
            out, inp, total, H, W, OH, OW);
    return check_launch("adaptive_avg_pool2d kernel");
}

}  // namespace acn

namespace {

// The host-pointer entry points of both pools: upload (NC, H, W), run `launch`
// into a device (NC, OH, OW) (and its indices, when `indices` is not NULL), download.
// `op` names the op in every message.
template <class Launch>
int pool_host_call(const char *op, float *out, int64_t *indices, const float *inp, int NC, int H,
                   int W, int OH, int OW, Launch launch) {
    using namespace acn;
    if (NC < 0 || H < 1 || W < 1 || OH < 0 || OW < 0)
        return cuda_fail_msg(ACN_EINVAL, "%s: invalid sizes", op);
    const size_t n_out = (size_t)NC * OH * OW;
    if (n_out == 0) return ACN_OK;
    const cudaStream_t stream = host_call_stream();
    DeviceBuffers mem;
    float *d_inp, *d_out;
    char what[64];   // DeviceBuffers uses it only for the message of a failure
    snprintf(what, sizeof what, "%s input", op);
    ACN_TRY(mem.upload(&d_inp, inp, (size_t)NC * H * W, stream, what));
    snprintf(what, sizeof what, "%s output", op);
    ACN_TRY(mem.alloc(&d_out, n_out, what));
    int64_t *d_idx = nullptr;
    if (indices) {
        snprintf(what, sizeof what, "%s indices", op);
        ACN_TRY(mem.alloc(&d_idx, n_out, what));
    }
    ACN_TRY(launch(d_out, d_idx, d_inp, stream));
    if (indices)
        ACN_CUDA_TRY(cudaMemcpyAsync(indices, d_idx, n_out * sizeof(int64_t), cudaMemcpyDeviceToHost,
                                     stream),
                     "copy of the indices to the host");
    return download_and_wait(out, d_out, n_out, stream);
}

}  // namespace

extern "C" int max_pool2d_host_cuda(float *out, int64_t *indices, const float *inp, int NC, int H,
                                    int W, int KH, int KW, int SH, int SW, int PH, int PW, int DH,
                                    int DW, int OH, int OW) {
    return pool_host_call("max_pool2d", out, indices, inp, NC, H, W, OH, OW,
                          [&](float *d_out, int64_t *d_idx, const float *d_inp, cudaStream_t stream) {
                              return acn::max_pool2d_forward_cuda(d_out, d_idx, d_inp, NC, H, W, KH, KW,
                                                                  SH, SW, PH, PW, DH, DW, OH, OW, stream);
                          });
}

extern "C" int adaptive_avg_pool2d_host_cuda(float *out, const float *inp, int NC, int H, int W,
                                             int OH, int OW) {
    return pool_host_call("adaptive_avg_pool2d", out, nullptr, inp, NC, H, W, OH, OW,
                          [&](float *d_out, int64_t *, const float *d_inp, cudaStream_t stream) {
                              return acn::adaptive_avg_pool2d_forward_cuda(d_out, d_inp, NC, H, W, OH, OW,
                                                                           stream);
                          });
}
