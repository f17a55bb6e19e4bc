/* AVX2+FMA micro-kernel, 6x16: 12 ymm accumulators, 2 for B, 1 broadcast
 * (15 of the 16 ymm registers); FMA-bound on the two FMA ports. */
#include "cpu_internal.h"

#if ACN_X86
#include <immintrin.h>

enum { MR = 6, NR = 16 };

/* A_PREFETCH_K: k steps ahead that the packed A panel is prefetched into L1 (1.5 KB):
 * A streams from L3 past each B micro-panel (see gemm_avx512.c); forced onto this
 * path on one thread of an Intel Xeon VM, batch-1 conv3-5 measured 15-18% faster with
 * it, conv2 6%. */
enum { A_PREFETCH_K = 64 };

__attribute__((target("avx2,fma")))
static void ukernel_avx2(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                         int flags, const float *bias)
{
    /* Named accumulators: an array indexed in the epilogue would be kept on the stack. */
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b + (size_t)k * NR);
        const __m256 b1 = _mm256_load_ps(b + (size_t)k * NR + 8);
        const float *ak = a + (size_t)k * MR;
        __m256 ai;
        _mm_prefetch((const char *)(ak + A_PREFETCH_K * MR), _MM_HINT_T0);
        ai = _mm256_broadcast_ss(ak + 0); c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(ak + 1); c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(ak + 2); c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(ak + 3); c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(ak + 4); c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(ak + 5); c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __m256 zero = _mm256_setzero_ps();
    for (int i = 0; i < MR; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        __m256 x0 = acc[i][0], x1 = acc[i][1];
        if (flags & ACN_UK_ACCUM) {
            x0 = _mm256_add_ps(x0, _mm256_loadu_ps(ci));
            x1 = _mm256_add_ps(x1, _mm256_loadu_ps(ci + 8));
        }
        if (flags & ACN_UK_BIAS) {
            const __m256 bi = _mm256_set1_ps(bias[i]);
            x0 = _mm256_add_ps(x0, bi);
            x1 = _mm256_add_ps(x1, bi);
        }
        if (flags & ACN_UK_RELU) {   /* max(0, x): MAXPS returns the 2nd operand on NaN */
            x0 = _mm256_max_ps(zero, x0);
            x1 = _mm256_max_ps(zero, x1);
        }
        _mm256_storeu_ps(ci, x0);
        _mm256_storeu_ps(ci + 8, x1);
    }
}

/* 6x8 for a partial panel of <= 8 columns (B rows still NR apart). */
__attribute__((target("avx2,fma")))
static void ukernel_avx2_narrow(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, int cols)
{
    (void)cols;
    __m256 acc[MR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        acc[i] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++, a += MR, b += NR) {
        const __m256 bk = _mm256_load_ps(b);
        _mm_prefetch((const char *)(a + A_PREFETCH_K * MR), _MM_HINT_T0);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + i), bk, acc[i]);
    }
    for (int i = 0; i < MR; i++)
        _mm256_storeu_ps(c + (ptrdiff_t)i * ldc, acc[i]);
}

/* 8x8 transpose: pairs interleaved, then quads, then the 128-bit halves swapped. */
__attribute__((target("avx2")))
static inline void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* The AVX2 twin of acn_pack_bt_avx512: 8x8 register transposes, NR a multiple of 8.
 * (A scalar gather packs fc1 at ~3 GB/s, a third of the read bandwidth.) */
__attribute__((target("avx2")))
void acn_pack_bt_avx2(float *dst, const float *bt, ptrdiff_t ldb, int p0, int kc, int j0, int ncols, int NR)
{
    for (int panel = 0; panel * NR < ncols; panel++) {
        float *d = dst + (size_t)panel * kc * NR;
        for (int jg = 0; jg < NR; jg += 8) {
            const int j = panel * NR + jg;
            const int rows = ncols - j < 8 ? (ncols - j > 0 ? ncols - j : 0) : 8;
            const float *src = bt + (ptrdiff_t)(j0 + j) * ldb + p0;
            for (int k = 0; k < kc; k += 8) {
                const int kn = kc - k < 8 ? kc - k : 8;
                const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = i < rows ? _mm256_maskload_ps(src + (ptrdiff_t)i * ldb + k, mk) : _mm256_setzero_ps();
                transpose8(r);
                for (int t = 0; t < kn; t++)
                    _mm256_storeu_ps(d + (size_t)(k + t) * NR + jg, r[t]);
            }
        }
    }
}

static const acn_ukernel avx2_kernel = {MR, NR, ukernel_avx2, ACN_ISA_AVX2, ukernel_avx2_narrow, 8};

const acn_ukernel *acn_ukernel_avx2(void) { return &avx2_kernel; }
#else
const acn_ukernel *acn_ukernel_avx2(void) { return NULL; }
void acn_pack_bt_avx2(float *dst, const float *bt, ptrdiff_t ldb, int p0, int kc, int j0, int ncols, int NR)
{
    (void)dst; (void)bt; (void)ldb; (void)p0; (void)kc; (void)j0; (void)ncols; (void)NR;
}
#endif
