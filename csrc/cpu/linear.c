/* Fully-connected layers: out(N,Out) = inp(N,In) x weight(Out,In)^T + bias.
 *
 * Two regimes. From a few input rows up (gemm_min_rows) the layer is
 * compute-bound and goes through the packed GEMM (gemm.c) with B = W^T: each
 * block of weight rows is packed per call (16x16 or 8x8 register transposes on
 * AVX-512 / AVX2) and reused by every input row from L2.
 *
 * At small batch the layer is bound by the memory read bandwidth, and the
 * weight matrix is read in its own layout, never packed or copied (fc1 is
 * 151 MB): a register tile of 8 weight rows x up to 3 input rows keeps 24
 * vector accumulators of dot-product partial sums along the whole of In, so
 * each weight row is one sequential stream, loaded once.
 * The AVX-512 tile prefetches into L2 (T1), 2 KB ahead, on the first pass over
 * each row tile only (later input rows find the tile in L2; the AVX2 and portable
 * tiles leave the streams to the hardware prefetcher). Measured on Zen 4, fc1 at
 * batch 1: 5.6 ms on one thread and 4.0 ms on two, against 9.3 / 4.9 ms with
 * prefetches into L1 (T0), whose fill buffers then stall the loads, and
 * 6.0 / 4.1 ms with none.
 * Threads take blocks of 64 Out rows from a dynamic schedule.
 */
#include "cpu_internal.h"

#include <omp.h>

enum { TR = 8, TN = 3, KCF = 512, OSB = 64, STREAM_ROWS = 8 };

/* Input rows from which the packed GEMM beats streaming the weights in place
 * (fc1, 2 threads): AVX-512 at 8 (measured on Sapphire Rapids before the L2
 * prefetch: 11.1 vs 12.4 ms, 4 rows 11.7 vs 9.5; on Zen 4 with it, 4 rows 5.1 vs
 * 9.7 ms, while at 8 rows runs went either way, 6.3-10.4 vs 9.0-10.1 ms, so the
 * crossover stays), AVX2 at 4 (12.8 vs 17.7 ms; 3 rows: 13.6 vs 11.2), the
 * portable kernels at 16 (their pack is a scalar gather). */
static int gemm_min_rows(acn_isa isa)
{
    return isa == ACN_ISA_AVX512 ? 8 : isa == ACN_ISA_AVX2 ? 4 : 16;
}

/* out[n*ldo + r] (+)= sum_k w[r*ldw + k] * x[n*ldx + k], r < R, n < nx. */
typedef void (*fc_tile_fn)(const float *w, ptrdiff_t ldw, int R, const float *x, ptrdiff_t ldx, int nx,
                           int kc, float *out, ptrdiff_t ldo, int accumulate, int stream);

static void fc_tile_generic(const float *w, ptrdiff_t ldw, int R, const float *x, ptrdiff_t ldx, int nx,
                            int kc, float *out, ptrdiff_t ldo, int accumulate, int stream)
{
    (void)stream;
    enum { L = 8 };
    for (int r = 0; r < R; r++) {
        const float *wr = w + (ptrdiff_t)r * ldw;
        for (int n = 0; n < nx; n++) {
            const float *xn = x + (ptrdiff_t)n * ldx;
            float acc[L] = {0};   /* L independent sums: vectorisable without reassociating */
            int k = 0;
            for (; k + L <= kc; k += L)
                for (int l = 0; l < L; l++)
                    acc[l] = acn_madd(wr[k + l], xn[k + l], acc[l]);
            float s = 0.0f;
            for (int l = 0; l < L; l++)
                s += acc[l];
            for (; k < kc; k++)
                s = acn_madd(wr[k], xn[k], s);
            float *o = out + (ptrdiff_t)n * ldo + r;
            *o = accumulate ? *o + s : s;
        }
    }
}

#if ACN_X86
#include <immintrin.h>

/* W, X, OUT must not mention r or n: the tile's own loops use those names. */
#define ACN_FC_TILE_512(RR, NX, W, X, OUT)                                                           \
    do {                                                                                  \
        __m512 acc[RR][NX];                                                               \
        _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++)                                 \
            _Pragma("GCC unroll 6") for (int n = 0; n < NX; n++)                             \
                acc[r][n] = _mm512_setzero_ps();                                          \
        int k = 0;                                                                        \
        for (; k + 16 <= kc; k += 16) {                                                   \
            if (stream)                                                                   \
                _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++)                       \
                    _mm_prefetch((const char *)((W) + (ptrdiff_t)r * ldw + k + 512), _MM_HINT_T1); \
            __m512 xv[NX];                                                                \
            _Pragma("GCC unroll 6") for (int n = 0; n < NX; n++)                             \
                xv[n] = _mm512_loadu_ps((X) + (ptrdiff_t)n * ldx + k);                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++) {                           \
                const __m512 wv = _mm512_loadu_ps((W) + (ptrdiff_t)r * ldw + k);            \
                for (int n = 0; n < NX; n++)                                              \
                    acc[r][n] = _mm512_fmadd_ps(wv, xv[n], acc[r][n]);                    \
            }                                                                             \
        }                                                                                 \
        if (k < kc) {                                                                     \
            const __mmask16 mk = (__mmask16)((1u << (kc - k)) - 1u);                      \
            __m512 xv[NX];                                                                \
            _Pragma("GCC unroll 6") for (int n = 0; n < NX; n++)                             \
                xv[n] = _mm512_maskz_loadu_ps(mk, (X) + (ptrdiff_t)n * ldx + k);            \
            _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++) {                           \
                const __m512 wv = _mm512_maskz_loadu_ps(mk, (W) + (ptrdiff_t)r * ldw + k);  \
                for (int n = 0; n < NX; n++)                                              \
                    acc[r][n] = _mm512_fmadd_ps(wv, xv[n], acc[r][n]);                    \
            }                                                                             \
        }                                                                                 \
        for (int n = 0; n < NX; n++)                                                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++) {                           \
                float *o = (OUT) + (ptrdiff_t)n * ldo + r;                                  \
                const float s = _mm512_reduce_add_ps(acc[r][n]);                          \
                *o = accumulate ? *o + s : s;                                             \
            }                                                                             \
    } while (0)

__attribute__((target("avx512f,fma")))
static void fc_tile_avx512(const float *w, ptrdiff_t ldw, int R, const float *x, ptrdiff_t ldx, int nx,
                           int kc, float *out, ptrdiff_t ldo, int accumulate, int stream)
{
    if (R == TR) {
        switch (nx) {
        case 3: ACN_FC_TILE_512(8, 3, w, x, out); return;
        case 2: ACN_FC_TILE_512(8, 2, w, x, out); return;
        case 1: ACN_FC_TILE_512(8, 1, w, x, out); return;
        default: break;
        }
    }
    for (int r = 0; r < R; r++)
        for (int n = 0; n < nx; n++) {
            const float *wr = w + (ptrdiff_t)r * ldw, *xn = x + (ptrdiff_t)n * ldx;
            float *on = out + (ptrdiff_t)n * ldo + r;
            ACN_FC_TILE_512(1, 1, wr, xn, on);
        }
}

#define ACN_FC_TILE_256(RR, NX, W, X, OUT)                                                           \
    do {                                                                                  \
        __m256 acc[RR][NX];                                                               \
        _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++)                                 \
            _Pragma("GCC unroll 6") for (int n = 0; n < NX; n++)                             \
                acc[r][n] = _mm256_setzero_ps();                                          \
        int k = 0;                                                                        \
        for (; k + 8 <= kc; k += 8) {                                                     \
            __m256 xv[NX];                                                                \
            _Pragma("GCC unroll 6") for (int n = 0; n < NX; n++)                             \
                xv[n] = _mm256_loadu_ps((X) + (ptrdiff_t)n * ldx + k);                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++) {                           \
                const __m256 wv = _mm256_loadu_ps((W) + (ptrdiff_t)r * ldw + k);            \
                for (int n = 0; n < NX; n++)                                              \
                    acc[r][n] = _mm256_fmadd_ps(wv, xv[n], acc[r][n]);                    \
            }                                                                             \
        }                                                                                 \
        for (int n = 0; n < NX; n++)                                                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < RR; r++) {                           \
                float lanes[8];                                                           \
                _mm256_storeu_ps(lanes, acc[r][n]);                                       \
                float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))                 \
                        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));                \
                for (int kk = k; kk < kc; kk++)                                           \
                    s += (W)[(ptrdiff_t)r * ldw + kk] * (X)[(ptrdiff_t)n * ldx + kk]; \
                float *o = (OUT) + (ptrdiff_t)n * ldo + r;                                  \
                *o = accumulate ? *o + s : s;                                             \
            }                                                                             \
    } while (0)

__attribute__((target("avx2,fma")))
static void fc_tile_avx2(const float *w, ptrdiff_t ldw, int R, const float *x, ptrdiff_t ldx, int nx,
                         int kc, float *out, ptrdiff_t ldo, int accumulate, int stream)
{
    (void)stream;   /* measured: a T1 prefetch here is no steady gain (1 thread, Zen 4) */
    /* 16 ymm registers: 4x2 accumulators + 2 inputs + 1 weight, 4 rows at a time. */
    int r0 = 0;
    for (; r0 + 4 <= R; r0 += 4) {
        int n0 = 0;
        for (; n0 + 2 <= nx; n0 += 2) {
            ACN_FC_TILE_256(4, 2, w + (ptrdiff_t)r0 * ldw, x + (ptrdiff_t)n0 * ldx, out + (ptrdiff_t)n0 * ldo + r0);
        }
        /* A lone input row (batch 1): 4 weight rows still, so 4 independent FMA
         * chains instead of 1 (fc1 at batch 1: 6.0 instead of 9.2 ms, 1 thread). */
        if (n0 < nx)
            ACN_FC_TILE_256(4, 1, w + (ptrdiff_t)r0 * ldw, x + (ptrdiff_t)n0 * ldx, out + (ptrdiff_t)n0 * ldo + r0);
    }
    for (int r = r0; r < R; r++)
        for (int n = 0; n < nx; n++) {
            const float *wr = w + (ptrdiff_t)r * ldw, *xn = x + (ptrdiff_t)n * ldx;
            float *on = out + (ptrdiff_t)n * ldo + r;
            ACN_FC_TILE_256(1, 1, wr, xn, on);
        }
}
#endif

static fc_tile_fn active_fc_tile(void)
{
#if ACN_X86
    switch (acn_active_isa()) {
    case ACN_ISA_AVX512: return fc_tile_avx512;
    case ACN_ISA_AVX2: return fc_tile_avx2;
    default: break;
    }
#endif
    return fc_tile_generic;
}

static void fc_rows(fc_tile_fn tile, float *out, const float *inp, const float *weight, const float *bias,
                    int N, int In, int Out, int relu, int o0, int o1)
{
    /* Small batch: whole rows, so each weight row is one sequential stream. */
    const int kcf = N <= STREAM_ROWS ? (In > 0 ? In : 1) : KCF;
    for (int os = o0; os < o1; os += OSB) {
        const int oe = os + OSB < o1 ? os + OSB : o1;
        for (int kb = 0; kb < In; kb += kcf) {
            const int kc = In - kb < kcf ? In - kb : kcf;
            for (int o = os; o < oe; o += TR) {
                const int R = oe - o < TR ? oe - o : TR;
                for (int n = 0; n < N; n += TN) {
                    const int nx = N - n < TN ? N - n : TN;
                    tile(weight + (size_t)o * In + kb, In, R, inp + (size_t)n * In + kb, In, nx, kc,
                         out + (size_t)n * Out + o, Out, kb > 0, n == 0);
                }
            }
        }
        for (int n = 0; n < N; n++) {
            float *on = out + (size_t)n * Out;
            for (int o = os; o < oe; o++) {
                float v = In > 0 ? on[o] : 0.0f;
                if (bias) v += bias[o];
                on[o] = relu ? acn_relu1(v) : v;
            }
        }
    }
}

int linear_forward_cpu(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int In, int Out, int relu)
{
    if (N <= 0 || Out <= 0)
        return ACN_OK;
    /* From a few rows up the packed GEMM wins (fc1 at batch 64: 33 vs 82 ms on
     * AVX-512, 49 vs 172 ms on AVX2): W^T is packed per call, at the read
     * bandwidth, into panels the micro-kernel reuses for all rows. Below that
     * the rows stream in place. */
    if (N >= gemm_min_rows(acn_active_isa()))
        return sgemm_cpu(out, Out, inp, In, 1, weight, 1, In, N, Out, In, bias, ACN_BIAS_COL, relu);
    const fc_tile_fn tile = active_fc_tile();
    /* Blocks of OSB rows handed out dynamically: a core slowed by the host
     * takes fewer of them instead of holding up the layer. */
    const int blocks = (Out + OSB - 1) / OSB;
    int nt = acn_get_num_threads();
    if (nt > blocks) nt = blocks;
#pragma omp parallel for schedule(dynamic) num_threads(nt) if (nt > 1)
    for (int b = 0; b < blocks; b++)
        fc_rows(tile, out, inp, weight, bias, N, In, Out, relu, b * OSB, b * OSB + OSB < Out ? b * OSB + OSB : Out);
    return ACN_OK;
}

int linear_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int In, int Out, int relu)
{
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < Out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < In; i++)
                acc += (double)inp[(size_t)n * In + i] * weight[(size_t)o * In + i];
            const float v = (float)acc;
            out[(size_t)n * Out + o] = relu ? acn_relu1(v) : v;
        }
    }
    return ACN_OK;
}
