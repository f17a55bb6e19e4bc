/* AVX-512 micro-kernel, 8x48: 24 zmm accumulators in named registers, 3 for
 * the B row, 1 broadcast; per k 3 vector loads + 8 broadcast-loads feed 24
 * FMAs, so it is bound by the two 512-bit FMA ports. 8 divides every AlexNet
 * channel count (64, 96, 192, 256, 384): no ragged row panels. (A 12x32 tile
 * was measured too: no faster, and it wastes 11% on conv1's 64 channels.) */
#include "cpu_internal.h"

#if ACN_X86
#include <immintrin.h>

enum { MR8 = 8, NR48 = 48 };

/* A_PREFETCH_K: how many k steps ahead the packed A panel is prefetched into L1.
 * A GEMM streams all of A (2.6-3.5 MB for conv3-5) past each B micro-panel, more
 * than a core's L2, so A comes from L3; the hardware prefetcher alone left the
 * batch-1 conv3-5 ~14% slower on one thread of an Intel Xeon VM (2 KB ahead
 * measured at least as fast as 0.5 and 1 KB; prefetching B as well, no faster). */
enum { A_PREFETCH_K = 64 };

__attribute__((target("avx512f,fma")))
static void ukernel_avx512_8x48(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                                int flags, const float *bias)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c02 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps(), c12 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c22 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c32 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c42 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps(), c52 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c62 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps(), c72 = _mm512_setzero_ps();
#define ACN_ROW(I, X0, X1, X2) \
    ai = _mm512_set1_ps(a[I]); X0 = _mm512_fmadd_ps(ai, b0, X0); X1 = _mm512_fmadd_ps(ai, b1, X1); \
    X2 = _mm512_fmadd_ps(ai, b2, X2)
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32);
        __m512 ai;
        _mm_prefetch((const char *)(a + A_PREFETCH_K * MR8), _MM_HINT_T0);
        ACN_ROW(0, c00, c01, c02); ACN_ROW(1, c10, c11, c12); ACN_ROW(2, c20, c21, c22);
        ACN_ROW(3, c30, c31, c32); ACN_ROW(4, c40, c41, c42); ACN_ROW(5, c50, c51, c52);
        ACN_ROW(6, c60, c61, c62); ACN_ROW(7, c70, c71, c72);
        a += MR8;
        b += NR48;
    }
#undef ACN_ROW
    __m512 acc[MR8][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                          {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < MR8; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        for (int v = 0; v < 3; v++) {
            __m512 x = acc[i][v];
            if (flags & ACN_UK_ACCUM) x = _mm512_add_ps(x, _mm512_loadu_ps(ci + 16 * v));
            if (flags & ACN_UK_BIAS) x = _mm512_add_ps(x, _mm512_set1_ps(bias[i]));
            if (flags & ACN_UK_RELU) x = _mm512_max_ps(zero, x);
            _mm512_storeu_ps(ci + 16 * v, x);
        }
    }
}

/* 8 x 16*NV for a partial panel (NV = 1, 2): the full kernel's loop on the
 * first NV vectors of each packed B row. */
#define ACN_NARROW_BODY(NV)                                                                 \
    __m512 acc[MR8][NV];                                                                    \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR8; i++)                                  \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps(); \
    for (int k = 0; k < kc; k++, a += MR8, b += NR48) {                                     \
        __m512 bv[NV];                                                                      \
        _mm_prefetch((const char *)(a + A_PREFETCH_K * MR8), _MM_HINT_T0);                  \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + 16 * v); \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR8; i++) {                             \
            const __m512 ai = _mm512_set1_ps(a[i]);                                         \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                            \
                acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);                          \
        }                                                                                   \
    }                                                                                       \
    for (int i = 0; i < MR8; i++)                                                           \
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(c + (ptrdiff_t)i * ldc + 16 * v, acc[i][v]);

__attribute__((target("avx512f,fma")))
static void narrow_8x16(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc) { ACN_NARROW_BODY(1) }

__attribute__((target("avx512f,fma")))
static void narrow_8x32(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc) { ACN_NARROW_BODY(2) }
#undef ACN_NARROW_BODY

static void ukernel_avx512_narrow(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, int cols)
{
    if (cols <= 16)
        narrow_8x16(kc, a, b, c, ldc);
    else
        narrow_8x32(kc, a, b, c, ldc);
}

/* 16x16 transpose as four rounds of two-source permutes: round d swaps the
 * off-diagonal d x d blocks of every 2d x 2d block, i.e. moves element (i, c)
 * to (i^d, c^d) where bit d of i and c differ; after d = 8, 4, 2, 1 every
 * element (i, c) sits at (c, i). */
#define ACN_T16_ROUND(D, ILO, IHI)                                              \
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {                      \
        if (i & (D))                                                             \
            continue;                                                            \
        const __m512 a = r[i], b = r[i + (D)];                                   \
        r[i] = _mm512_permutex2var_ps(a, ILO, b);                                \
        r[i + (D)] = _mm512_permutex2var_ps(a, IHI, b);                          \
    }

__attribute__((target("avx512f")))
static inline void transpose16(__m512 r[16])
{
    /* lo[c] = c & d ? 16 + c - d : c;  hi[c] = c & d ? 16 + c : c + d */
    const __m512i lo8 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i hi8 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i lo4 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi4 = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    const __m512i lo2 = _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
    const __m512i hi2 = _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    const __m512i lo1 = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    const __m512i hi1 = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    ACN_T16_ROUND(8, lo8, hi8)
    ACN_T16_ROUND(4, lo4, hi4)
    ACN_T16_ROUND(2, lo2, hi2)
    ACN_T16_ROUND(1, lo1, hi1)
}
#undef ACN_T16_ROUND

/* 16 rows of B^T are read 16 floats at a time and written as 16 rows of the
 * packed panel: at the memory read bandwidth (measured 9.3 GB/s on one core,
 * the same as a plain streaming sum), where a scalar gather is ~3x slower. */
__attribute__((target("avx512f")))
void acn_pack_bt_avx512(float *dst, const float *bt, ptrdiff_t ldb, int p0, int kc, int j0, int ncols, int NR)
{
    for (int panel = 0; panel * NR < ncols; panel++) {
        float *d = dst + (size_t)panel * kc * NR;
        for (int jg = 0; jg < NR; jg += 16) {
            const int j = panel * NR + jg;
            const int rows = ncols - j < 16 ? (ncols - j > 0 ? ncols - j : 0) : 16;
            const float *src = bt + (ptrdiff_t)(j0 + j) * ldb + p0;
            for (int k = 0; k < kc; k += 16) {
                const int kn = kc - k < 16 ? kc - k : 16;
                const __mmask16 mk = acn_lanes_left((size_t)kn);
                __m512 r[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    r[i] = i < rows ? _mm512_maskz_loadu_ps(mk, src + (ptrdiff_t)i * ldb + k) : _mm512_setzero_ps();
                }
                transpose16(r);
                for (int t = 0; t < kn; t++)
                    _mm512_storeu_ps(d + (size_t)(k + t) * NR + jg, r[t]);
            }
        }
    }
}

static const acn_ukernel avx512_kernel = {MR8, NR48, ukernel_avx512_8x48, ACN_ISA_AVX512, ukernel_avx512_narrow, 16};
const acn_ukernel *acn_ukernel_avx512(void) { return &avx512_kernel; }
#else
const acn_ukernel *acn_ukernel_avx512(void) { return NULL; }
void acn_pack_bt_avx512(float *dst, const float *bt, ptrdiff_t ldb, int p0, int kc, int j0, int ncols, int NR)
{
    (void)dst; (void)bt; (void)ldb; (void)p0; (void)kc; (void)j0; (void)ncols; (void)NR;
}
#endif
