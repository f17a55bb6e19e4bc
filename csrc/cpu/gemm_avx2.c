/* AVX2+FMA micro-kernel, 6x16: 12 ymm accumulators, 2 for B, 1 broadcast
 * (15 of the 16 ymm registers); FMA-bound on the two FMA ports. */
#include "cpu_internal.h"

#if ACN_X86
#include <immintrin.h>

enum { MR = 6, NR = 16 };

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

static const acn_ukernel avx2_kernel = {MR, NR, ukernel_avx2, ACN_ISA_AVX2};

const acn_ukernel *acn_ukernel_avx2(void) { return &avx2_kernel; }
#else
const acn_ukernel *acn_ukernel_avx2(void) { return NULL; }
#endif
