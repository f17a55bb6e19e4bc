/* Portable micro-kernel: plain C that any compiler vectorises for its baseline
 * (SSE2 on x86-64, NEON on aarch64). Correct everywhere; the fallback path. */
#include "cpu_internal.h"

enum { MR = 4, NR = 16 };

static void ukernel_generic(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            int flags, const float *bias)
{
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++) {
        const float *bk = b + (size_t)k * NR;
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
            const float ai = a[(size_t)k * MR + i];
            for (int j = 0; j < NR; j++)
                acc[i][j] = acn_madd(ai, bk[j], acc[i][j]);
        }
    }
    for (int i = 0; i < MR; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        for (int j = 0; j < NR; j++) {
            float v = acc[i][j];
            if (flags & ACN_UK_ACCUM) v += ci[j];
            if (flags & ACN_UK_BIAS) v += bias[i];
            if (flags & ACN_UK_RELU) v = acn_relu1(v);
            ci[j] = v;
        }
    }
}

static const acn_ukernel generic_kernel = {MR, NR, ukernel_generic, ACN_ISA_GENERIC, NULL, 0};

const acn_ukernel *acn_ukernel_generic(void) { return &generic_kernel; }
