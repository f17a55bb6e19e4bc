/* Packed SGEMM: the engine under convolution and the fully-connected layers.
 *
 * Loop nest (Goto/BLIS): column blocks of NC -> depth blocks of KC (pack B once,
 * shared by the team) -> row blocks of MC (pack A, shared) -> MR x NR tiles
 * split over the threads. The micro-kernel (ISA-specific, gemm_<isa>.c) is where
 * the time goes; packing makes its loads contiguous and lets callers describe B
 * however they like (conv2d packs straight from the image: no im2col buffer).
 */
#include "cpu_internal.h"

#include <omp.h>
#include <string.h>

enum { KC = 256, MC_TARGET = 144, NC_TARGET = 2048, MAX_TILE = 16 * 64 };

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static int min_int(int a, int b) { return a < b ? a : b; }

void acn_pack_b_strided(float *dst, const void *ctx, int p0, int kc, int j0, int ncols, int NR)
{
    const acn_strided_b *s = ctx;
    for (int panel = 0; panel * NR < ncols; panel++) {
        int jn = min_int(NR, ncols - panel * NR);
        float *d = dst + (size_t)panel * kc * NR;
        for (int k = 0; k < kc; k++) {
            const float *src = s->B + (ptrdiff_t)(p0 + k) * s->rsb + (ptrdiff_t)(j0 + panel * NR) * s->csb;
            if (s->csb == 1) {
                memcpy(d + (size_t)k * NR, src, (size_t)jn * sizeof(float));
            } else {
                for (int j = 0; j < jn; j++)
                    d[(size_t)k * NR + j] = src[(ptrdiff_t)j * s->csb];
            }
            for (int j = jn; j < NR; j++)
                d[(size_t)k * NR + j] = 0.0f;
        }
    }
}

/* One MR-row panel of A: dst[k*MR + i], rows past m are zero. */
static void pack_a_panel(float *dst, const float *A, ptrdiff_t rsa, ptrdiff_t csa,
                         int i0, int m, int p0, int kc, int MR)
{
    for (int i = 0; i < MR; i++) {
        if (i < m) {
            const float *src = A + (ptrdiff_t)(i0 + i) * rsa + (ptrdiff_t)p0 * csa;
            for (int k = 0; k < kc; k++)
                dst[(size_t)k * MR + i] = src[(ptrdiff_t)k * csa];
        } else {
            for (int k = 0; k < kc; k++)
                dst[(size_t)k * MR + i] = 0.0f;
        }
    }
}

static void epilogue(float *c, ptrdiff_t ldc, int m, int n, int row, int col,
                     const float *bias, int bias_mode, int relu)
{
    for (int i = 0; i < m; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        if (bias_mode == ACN_BIAS_ROW) {
            float b = bias[row + i];
            for (int j = 0; j < n; j++) ci[j] += b;
        } else if (bias_mode == ACN_BIAS_COL) {
            for (int j = 0; j < n; j++) ci[j] += bias[col + j];
        }
        if (relu)
            for (int j = 0; j < n; j++) ci[j] = acn_relu1(ci[j]);
    }
}

static void run_tile(const acn_ukernel *uk, int kc, const float *pa, const float *pb,
                     float *c, ptrdiff_t ldc, int m, int n, int accumulate)
{
    if (m == uk->MR && n == uk->NR) {
        uk->kernel(kc, pa, pb, c, ldc, accumulate);
        return;
    }
    /* Edge tile: compute the full MR x NR into scratch, keep the valid part. */
    float tmp[MAX_TILE] __attribute__((aligned(64)));
    uk->kernel(kc, pa, pb, tmp, uk->NR, 0);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[(ptrdiff_t)i * ldc + j] = accumulate ? c[(ptrdiff_t)i * ldc + j] + tmp[i * uk->NR + j]
                                                   : tmp[i * uk->NR + j];
}

int acn_sgemm(const acn_gemm_args *g)
{
    const int M = g->M, N = g->N, K = g->K;
    if (M <= 0 || N <= 0)
        return ACN_OK;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            memset(g->C + (ptrdiff_t)i * g->ldc, 0, (size_t)N * sizeof(float));
        epilogue(g->C, g->ldc, M, N, 0, 0, g->bias, g->bias ? g->bias_mode : ACN_BIAS_NONE, g->relu);
        return ACN_OK;
    }
    const acn_ukernel *uk = acn_active_ukernel();
    const int MR = uk->MR, NR = uk->NR;
    if (MR * NR > MAX_TILE)
        return ACN_EINVAL;
    const int MC = round_up(min_int(MC_TARGET, M), MR);
    const int NC = round_up(min_int(NC_TARGET, N), NR);
    const int kc_max = min_int(KC, K);
    float *pack_a = acn_thread_buffer(ACN_TLS_PACK_A, (size_t)MC * kc_max);
    float *pack_b = acn_thread_buffer(ACN_TLS_PACK_B, (size_t)NC * kc_max);
    if (pack_a == NULL || pack_b == NULL)
        return ACN_ENOMEM;
    const int bias_mode = g->bias ? g->bias_mode : ACN_BIAS_NONE;
    const int nt = acn_get_num_threads();

#pragma omp parallel num_threads(nt) if (nt > 1)
    for (int jc = 0; jc < N; jc += NC) {
        const int nc = min_int(NC, N - jc);
        const int panels_b = (nc + NR - 1) / NR;
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = min_int(KC, K - pc);
            const int accumulate = pc > 0, last = pc + kc >= K;
#pragma omp for schedule(static)
            for (int pb = 0; pb < panels_b; pb++)
                g->pack_b(pack_b + (size_t)pb * kc * NR, g->b_ctx, pc, kc, jc + pb * NR,
                          min_int(NR, N - jc - pb * NR), NR);
            for (int ic = 0; ic < M; ic += MC) {
                const int mc = min_int(MC, M - ic);
                const int panels_a = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
                for (int pa = 0; pa < panels_a; pa++)
                    pack_a_panel(pack_a + (size_t)pa * kc * MR, g->A, g->rsa, g->csa,
                                 ic + pa * MR, min_int(MR, M - ic - pa * MR), pc, kc, MR);
#pragma omp for collapse(2) schedule(static)
                for (int jr = 0; jr < panels_b; jr++) {
                    for (int ir = 0; ir < panels_a; ir++) {
                        const int row = ic + ir * MR, col = jc + jr * NR;
                        const int m = min_int(MR, M - row), n = min_int(NR, N - col);
                        float *c = g->C + (ptrdiff_t)row * g->ldc + col;
                        run_tile(uk, kc, pack_a + (size_t)ir * kc * MR, pack_b + (size_t)jr * kc * NR,
                                 c, g->ldc, m, n, accumulate);
                        if (last && (bias_mode != ACN_BIAS_NONE || g->relu))
                            epilogue(c, g->ldc, m, n, row, col, g->bias, bias_mode, g->relu);
                    }
                }
            }
        }
    }
    return ACN_OK;
}

int sgemm_cpu(float *C, ptrdiff_t ldc,
              const float *A, ptrdiff_t rsa, ptrdiff_t csa,
              const float *B, ptrdiff_t rsb, ptrdiff_t csb,
              int M, int N, int K, const float *bias, int bias_mode, int relu)
{
    acn_strided_b b = {B, rsb, csb};
    acn_gemm_args g = {A, rsa, csa, acn_pack_b_strided, &b, C, ldc, M, N, K, bias, bias_mode, relu};
    return acn_sgemm(&g);
}

int sgemm_naive(float *C, ptrdiff_t ldc,
                const float *A, ptrdiff_t rsa, ptrdiff_t csa,
                const float *B, ptrdiff_t rsb, ptrdiff_t csb,
                int M, int N, int K, const float *bias, int bias_mode, int relu)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)A[(ptrdiff_t)i * rsa + (ptrdiff_t)k * csa]
                     * (double)B[(ptrdiff_t)k * rsb + (ptrdiff_t)j * csb];
            if (bias && bias_mode == ACN_BIAS_ROW) acc += bias[i];
            if (bias && bias_mode == ACN_BIAS_COL) acc += bias[j];
            float v = (float)acc;
            C[(ptrdiff_t)i * ldc + j] = relu ? acn_relu1(v) : v;
        }
    }
    return ACN_OK;
}
