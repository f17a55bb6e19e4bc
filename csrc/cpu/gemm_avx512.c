/* AVX-512 micro-kernel, 8x48: 24 zmm accumulators in named registers, 3 for
 * the B row, 1 broadcast; per k 3 vector loads + 8 broadcast-loads feed 24
 * FMAs, so it is bound by the two 512-bit FMA ports. 8 divides every AlexNet
 * channel count (64, 96, 192, 256, 384): no ragged row panels. (A 12x32 tile
 * was measured too: no faster, and it wastes 11% on conv1's 64 channels.) */
#include "cpu_internal.h"

#if ACN_X86
#include <immintrin.h>

enum { MR8 = 8, NR48 = 48 };

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

static const acn_ukernel avx512_kernel = {MR8, NR48, ukernel_avx512_8x48, ACN_ISA_AVX512};
const acn_ukernel *acn_ukernel_avx512(void) { return &avx512_kernel; }
#else
const acn_ukernel *acn_ukernel_avx512(void) { return NULL; }
#endif
