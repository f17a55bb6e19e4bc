/* AVX2+FMA micro-kernel, 6x16: 12 ymm accumulators, 2 for B, 1 broadcast. */
#include "cpu_internal.h"

#if ACN_X86
#include <immintrin.h>

enum { MR = 6, NR = 16 };

__attribute__((target("avx2,fma")))
static void ukernel_avx2(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, int accumulate)
{
    __m256 acc[MR][2];
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b + (size_t)k * NR);
        const __m256 b1 = _mm256_load_ps(b + (size_t)k * NR + 8);
        for (int i = 0; i < MR; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + (size_t)k * MR + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
            acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
        }
        _mm256_storeu_ps(ci, acc[i][0]);
        _mm256_storeu_ps(ci + 8, acc[i][1]);
    }
}

static const acn_ukernel avx2_kernel = {MR, NR, ukernel_avx2};

const acn_ukernel *acn_ukernel_avx2(void) { return &avx2_kernel; }
#else
const acn_ukernel *acn_ukernel_avx2(void) { return NULL; }
#endif
