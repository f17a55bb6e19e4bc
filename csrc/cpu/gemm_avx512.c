/* AVX-512 micro-kernel, 8x32: 16 zmm accumulators; every AlexNet channel count
 * is a multiple of 8, so conv tiles have no ragged rows. */
#include "cpu_internal.h"

#if ACN_X86
#include <immintrin.h>

enum { MR = 8, NR = 32 };

__attribute__((target("avx512f,fma")))
static void ukernel_avx512(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, int accumulate)
{
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b + (size_t)k * NR);
        const __m512 b1 = _mm512_load_ps(b + (size_t)k * NR + 16);
        for (int i = 0; i < MR; i++) {
            const __m512 ai = _mm512_set1_ps(a[(size_t)k * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}

static const acn_ukernel avx512_kernel = {MR, NR, ukernel_avx512};

const acn_ukernel *acn_ukernel_avx512(void) { return &avx512_kernel; }
#else
const acn_ukernel *acn_ukernel_avx512(void) { return NULL; }
#endif
