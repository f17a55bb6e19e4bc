/* linear.cu: out (N,O) = inp (N,I) . weight (O,I)^T + bias, optional ReLU.
 *
 * Small batch (the classifier at batch 1..16) is bound by reading the weight: fc1
 * alone is 151 MB. linear_rows_kernel gives each warp one output row o and streams
 * weight[o, :] once, with 16-byte loads, for up to ROWS_MAX batch rows at a time; the
 * inputs (N x I, at most a few hundred KB) stay in L1/L2 and are re-read by every warp.
 * Large batch is compute bound and goes to the tiled GEMM of gemm.cuh (Rows loader).
 * precision="tf32" applies to that GEMM only: the streaming kernel is bound by memory,
 * where tensor cores would gain nothing, so small batches stay float32 (as cuBLAS
 * with TF32 allowed may also choose).
 */
#include <limits.h>

#include "gemm.cuh"

namespace acn {
namespace {

constexpr int kRowsWarps = 8;        /* output rows per block */
constexpr int kRowsMax = 8;          /* batch rows per pass over the weight */
constexpr int kStreamBatchMax = 16;  /* above this batch size, the tiled GEMM wins */
constexpr int kUnroll = 4;           /* float4 weight loads in flight per lane */

/* out (nb,O) rows of this pass, inp (nb,I): the same loop as linear_forward_naive,
 *   out[n][o] = bias[o] + sum_i inp[n][i] * weight[o][i],
 * with i split across the 32 lanes of a warp and summed by shuffles.
 * NB is nb rounded up to a power of two so the accumulators stay in registers.
 * VEC: I % 4 == 0 and 16-byte aligned rows, so a lane reads float4s. */
template <int NB, bool VEC>
__global__ void __launch_bounds__(kRowsWarps * kWarp)
linear_rows_kernel(float *out, const float *inp, const float *weight, const float *bias,
                   int nb, int I, int O, int relu) {
    const int lane = threadIdx.x % kWarp;
    const int o = blockIdx.x * kRowsWarps + threadIdx.x / kWarp;
    if (o >= O) return;   /* the whole warp leaves: the shuffles below see full warps */
    const float *w_row = weight + (size_t)o * I;

    float acc[NB];
#pragma unroll
    for (int n = 0; n < NB; ++n) acc[n] = 0.f;

    if constexpr (VEC) {
        const int I4 = I / 4;
        const float4 *w4 = reinterpret_cast<const float4 *>(w_row);
        const float4 *x4 = reinterpret_cast<const float4 *>(inp);
        for (int i0 = lane; i0 < I4; i0 += kUnroll * kWarp) {
            /* All weight loads first: kUnroll independent 16-byte loads per lane in flight.
             * Each weight is used once per pass, so it is streamed (evict-first) and the
             * inputs, used by every warp, keep the cache. */
            float4 w[kUnroll];
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int i = i0 + u * kWarp;
                w[u] = i < I4 ? __ldcs(w4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int i = i0 + u * kWarp;
                if (i >= I4) break;
#pragma unroll
                for (int n = 0; n < NB; ++n) {
                    if (n < nb) {
                        const float4 x = __ldg(x4 + (size_t)n * I4 + i);
                        acc[n] = fmaf(w[u].x, x.x, acc[n]);
                        acc[n] = fmaf(w[u].y, x.y, acc[n]);
                        acc[n] = fmaf(w[u].z, x.z, acc[n]);
                        acc[n] = fmaf(w[u].w, x.w, acc[n]);
                    }
                }
            }
        }
    } else {
        for (int i = lane; i < I; i += kWarp) {
            const float w = __ldcs(w_row + i);
#pragma unroll
            for (int n = 0; n < NB; ++n)
                if (n < nb) acc[n] = fmaf(w, __ldg(inp + (size_t)n * I + i), acc[n]);
        }
    }

#pragma unroll
    for (int n = 0; n < NB; ++n) acc[n] = warp_sum(acc[n]);
    if (lane == 0) {
        const float b = bias ? __ldg(bias + o) : 0.f;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
            if (n < nb) {
                float v = acc[n] + b;
                if (relu) v = relu_keep_nan(v);
                out[(size_t)n * O + o] = v;
            }
        }
    }
}

template <int NB>
acn_status launch_rows(float *out, const float *inp, const float *weight, const float *bias,
                       int nb, int I, int O, int relu, bool vec, cudaStream_t stream) {
    const unsigned blocks = ceil_div(O, kRowsWarps);
    if (vec)
        linear_rows_kernel<NB, true><<<blocks, kRowsWarps * kWarp, 0, stream>>>(
            out, inp, weight, bias, nb, I, O, relu);
    else
        linear_rows_kernel<NB, false><<<blocks, kRowsWarps * kWarp, 0, stream>>>(
            out, inp, weight, bias, nb, I, O, relu);
    return check_launch("linear kernel");
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

}  // namespace

acn_status linear_forward_cuda(float *out, const float *inp, const float *weight,
                               const float *bias, int N, int I, int O, int relu,
                               Precision precision, cudaStream_t stream) {
    if (N < 0 || I < 0 || O < 1)
        return cuda_fail_msg(ACN_EINVAL, "linear: invalid sizes (N=%d I=%d O=%d)", N, I, O);
    if (N == 0) return ACN_OK;
    /* Both kernels step through I in int (kMaxK leaves the steps room below INT_MAX). */
    if (I > kMaxK) return cuda_fail_msg(ACN_EINVAL, "linear: sizes too large for the CUDA kernel");
    if (N <= kStreamBatchMax) {
        const bool vec = I % 4 == 0 && aligned16(inp) && aligned16(weight);
        for (int n0 = 0; n0 < N; n0 += kRowsMax) {
            const int nb = N - n0 < kRowsMax ? N - n0 : kRowsMax;
            float *o = out + (size_t)n0 * O;
            const float *x = inp + (size_t)n0 * I;
            acn_status st;
            if (nb == 1)
                st = launch_rows<1>(o, x, weight, bias, nb, I, O, relu, vec, stream);
            else if (nb == 2)
                st = launch_rows<2>(o, x, weight, bias, nb, I, O, relu, vec, stream);
            else if (nb <= 4)
                st = launch_rows<4>(o, x, weight, bias, nb, I, O, relu, vec, stream);
            else
                st = launch_rows<8>(o, x, weight, bias, nb, I, O, relu, vec, stream);
            ACN_TRY(st);
        }
        return ACN_OK;
    }

    /* A linear layer is a 1x1 convolution over 1x1 images: the same GEMM, with the
     * batch rows as pixels (OHW = 1) and the input rows read directly. */
    GemmArgs a;
    a.out = out;
    a.inp = inp;
    a.weight = weight;
    a.bias = bias;
    a.C = I;
    a.H = 1;
    a.W = 1;
    a.OC = O;
    a.OHW = 1;
    a.OW = 1;
    a.KW = 1;
    a.SH = 1;
    a.SW = 1;
    a.PH = 0;
    a.PW = 0;
    a.Cg = I;
    a.OCg = O;
    a.K = I;
    a.P = N;
    a.relu = relu;
    a.div_khw = FastDiv(1);
    a.div_kw = FastDiv(1);
    a.div_ohw = FastDiv(1);
    a.div_ow = FastDiv(1);
    return gemm_tiled<BLoad::Rows>(a, 1, precision, stream, "linear kernel");
}

}  // namespace acn

extern "C" int linear_host_cuda(float *out, const float *inp, const float *weight,
                                const float *bias, int N, int I, int O, int relu, int tf32) {
    using namespace acn;
    if (N < 0 || I < 0 || O < 1) return cuda_fail_msg(ACN_EINVAL, "linear: invalid sizes");
    const size_t n_out = (size_t)N * O;
    if (n_out == 0) return ACN_OK;
    const Precision precision = tf32 ? Precision::Tf32 : Precision::Float32;
    if (tf32) ACN_TRY(check_tf32("linear"));   /* also where the streaming kernel runs */
    const cudaStream_t stream = host_call_stream();
    DeviceBuffers mem;
    float *d_inp, *d_weight, *d_bias = nullptr, *d_out;
    ACN_TRY(mem.upload(&d_inp, inp, (size_t)N * I, stream, "linear input"));
    ACN_TRY(mem.upload(&d_weight, weight, (size_t)O * I, stream, "linear weight"));
    if (bias) ACN_TRY(mem.upload(&d_bias, bias, (size_t)O, stream, "linear bias"));
    ACN_TRY(mem.alloc(&d_out, n_out, "linear output"));
    ACN_TRY(linear_forward_cuda(d_out, d_inp, d_weight, d_bias, N, I, O, relu, precision, stream));
    return download_and_wait(out, d_out, n_out, stream);
}
