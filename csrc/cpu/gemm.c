/* Packed SGEMM: the engine under convolution and the fully-connected layers.
 *
 * A (the weights) is packed once into MR-row panels over all of K (conv weights
 * when a net is built; other callers pack per call). Threads take chunks of
 * output columns from a shared counter and run the whole GEMM for each alone
 * (or, when the columns are few, for a range of A's rows): no barrier, no
 * shared packing buffer, and a core that runs slow for a while (a busy host)
 * simply takes fewer chunks.
 *
 * Per chunk of columns (BLIS order, without the MC loop since A is pre-packed):
 *   column block (~640 KB of packed B) -> depth block of KC: pack B (L2)
 *     -> B micro-panel (KC x NR) -> A panels streaming from L2
 *     -> micro-kernel (gemm_<isa>.c).
 * The micro-kernel is where the time goes; bias and ReLU are applied in its
 * registers on the last depth block.
 */
#include "cpu_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* KC_MAX: the deepest depth block. A whole AlexNet K (<= 2048, or K split in
 * equal halves/thirds) means each C tile is written once instead of once per
 * 160-deep block; the B micro-panel then lives in L2 rather than L1, which the
 * kernel tolerates (measured: conv layers 5-15% faster than KC = 160).
 * PACK_B_BYTES: one thread's packed-B block, sized to stay in L2 beside C. */
enum { KC_MAX = 2048, PACK_B_BYTES = 640 * 1024, MAX_TILE = 16 * 64 };

static int min_int(int a, int b) { return a < b ? a : b; }

void acn_pack_b_strided(float *dst, const void *ctx, int p0, int kc, int j0, int ncols, int NR)
{
    const acn_strided_b *s = ctx;
    if (s->rsb == 1 && s->csb != 1 && s->isa == ACN_ISA_AVX512 && NR % 16 == 0) {
        acn_pack_bt_avx512(dst, s->B, s->csb, p0, kc, j0, ncols, NR);
        return;
    }
    if (s->rsb == 1 && s->csb != 1 && s->isa == ACN_ISA_AVX2 && NR % 8 == 0) {
        acn_pack_bt_avx2(dst, s->B, s->csb, p0, kc, j0, ncols, NR);
        return;
    }
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

size_t acn_packed_a_floats(int M, int K, int MR)
{
    return (size_t)((M + MR - 1) / MR) * MR * (size_t)K;
}

void acn_pack_a(float *dst, const float *A, ptrdiff_t rsa, ptrdiff_t csa, int M, int K, int MR)
{
    const int panels = (M + MR - 1) / MR;
    /* Once per net for the conv weights (~9 MB, ~5 ms), per call for the ops API. */
    for (int p = 0; p < panels; p++) {
        float *d = dst + (size_t)p * K * MR;
        const int m = M - p * MR < MR ? M - p * MR : MR;
        const float *src = A + (ptrdiff_t)p * MR * rsa;
        for (int k = 0; k < K; k++) {   /* contiguous writes; MR read streams */
            float *dk = d + (size_t)k * MR;
            for (int i = 0; i < m; i++)
                dk[i] = src[(ptrdiff_t)i * rsa + (ptrdiff_t)k * csa];
            for (int i = m; i < MR; i++)
                dk[i] = 0.0f;
        }
    }
}

/* Address of column j of row 0 of C. */
static inline float *col_ptr(const acn_gemm_plan *g, int j)
{
    const int s = j / g->seg_cols;
    return g->C + (ptrdiff_t)s * g->seg_stride + (j - s * g->seg_cols);
}

/* A partial tile (m < MR or n < NR) or one that straddles two segments (a
 * 13x13 conv output: every sixth tile crosses into the next image): the
 * kernel writes a scratch tile, then each segment's piece is copied row by
 * row with accumulate/bias/ReLU (contiguous inner loops, vectorised). */
static void edge_tile(const acn_gemm_plan *g, int kc, const float *pa, const float *pb,
                      int row, int col, int m, int n, int flags)
{
    const acn_ukernel *uk = g->uk;
    float tmp[MAX_TILE] __attribute__((aligned(64)));
    if (uk->narrow != NULL && n <= uk->NR - uk->narrow_step)
        uk->narrow(kc, pa, pb, tmp, uk->NR, n);
    else
        uk->kernel(kc, pa, pb, tmp, uk->NR, 0, NULL);
    for (int j = 0; j < n;) {
        const int s = (col + j) / g->seg_cols, q = col + j - s * g->seg_cols;
        const int len = n - j < g->seg_cols - q ? n - j : g->seg_cols - q;
        float *base = g->C + (ptrdiff_t)s * g->seg_stride + (ptrdiff_t)row * g->ldc + q;
        for (int i = 0; i < m; i++) {
            float *restrict c = base + (ptrdiff_t)i * g->ldc;
            const float *restrict t = tmp + i * uk->NR + j;
            const float b = (flags & ACN_UK_BIAS) ? g->bias[row + i] : 0.0f;
            if (flags & ACN_UK_ACCUM)
                for (int u = 0; u < len; u++) c[u] += t[u];
            else
                for (int u = 0; u < len; u++) c[u] = t[u];
            if (flags & ACN_UK_BIAS)
                for (int u = 0; u < len; u++) c[u] += b;
            if (flags & ACN_UK_RELU)
                for (int u = 0; u < len; u++) c[u] = acn_relu1(c[u]);
        }
        j += len;
    }
}

/* Column bias (plain GEMM callers): added after the tile is final. */
static void col_bias_relu(const acn_gemm_plan *g, int row, int col, int m, int n)
{
    for (int j = 0; j < n; j++) {
        float *c = col_ptr(g, col + j) + (ptrdiff_t)row * g->ldc;
        for (int i = 0; i < m; i++) {
            float v = c[(ptrdiff_t)i * g->ldc] + g->bias[col + j];
            c[(ptrdiff_t)i * g->ldc] = g->relu ? acn_relu1(v) : v;
        }
    }
}

static inline void one_tile(const acn_gemm_plan *g, const float *pack_b, int kc, int pc, int ir, int jc, int jr,
                            int nc, int flags, int col_bias)
{
    const acn_ukernel *uk = g->uk;
    const int MR = uk->MR, NR = uk->NR;
    const int col = jc + jr * NR, n = min_int(NR, nc - jr * NR);
    const float *pb = pack_b + (size_t)jr * kc * NR;
    const int s = col / g->seg_cols, q = col - s * g->seg_cols;
    const int row = ir * MR, m = min_int(MR, g->M - row);
    const float *pa = g->pa + ((size_t)ir * g->K + pc) * MR;
    if (n == NR && q + NR <= g->seg_cols && m == MR) {
        float *c = g->C + (ptrdiff_t)s * g->seg_stride + (ptrdiff_t)row * g->ldc + q;
        uk->kernel(kc, pa, pb, c, g->ldc, flags, g->bias ? g->bias + row : NULL);
    } else {
        edge_tile(g, kc, pa, pb, row, col, m, n, flags);
    }
    if (col_bias)
        col_bias_relu(g, row, col, m, n);
}

/* Depth block: all of K up to KC_MAX, else K split evenly. */
static int depth_block(int K)
{
    const int blocks = (K + KC_MAX - 1) / KC_MAX;
    return (K + blocks - 1) / blocks;
}

/* Column panels per packed-B block (at least one). */
static int block_panels(const acn_gemm_plan *g)
{
    const int KC = g->K > 0 ? depth_block(g->K) : 1;
    const int fit = (int)(PACK_B_BYTES / ((size_t)KC * sizeof(float))) / g->uk->NR;
    return fit > 1 ? fit : 1;
}

/* Rows [ir0, ir1) of A panels times columns [j0, j1), on the calling thread. */
static int gemm_block(const acn_gemm_plan *g, int j0, int j1, int ir0, int ir1)
{
    const acn_ukernel *uk = g->uk;
    const int MR = uk->MR, NR = uk->NR, M = g->M, K = g->K;
    if (j1 <= j0 || M <= 0)
        return ACN_OK;
    if (MR * NR > MAX_TILE)
        return ACN_EINVAL;
    const int bias_mode = g->bias ? g->bias_mode : ACN_BIAS_NONE;
    if (K <= 0) {
        for (int j = j0; j < j1; j++) {
            float *c = col_ptr(g, j);
            for (int i = 0; i < M; i++) {
                float v = bias_mode == ACN_BIAS_ROW ? g->bias[i] : bias_mode == ACN_BIAS_COL ? g->bias[j] : 0.0f;
                c[(ptrdiff_t)i * g->ldc] = g->relu ? acn_relu1(v) : v;
            }
        }
        return ACN_OK;
    }
    const int KC = depth_block(K);
    const int ncb = min_int(block_panels(g) * NR, (j1 - j0 + NR - 1) / NR * NR);   /* whole panels */
    float *pack_b = acn_thread_buffer(ACN_TLS_PACK_B, (size_t)ncb * KC);
    if (pack_b == NULL)
        return ACN_ENOMEM;
    for (int jc = j0; jc < j1; jc += ncb) {
        const int nc = min_int(ncb, j1 - jc);
        const int panels_b = (nc + NR - 1) / NR;
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = min_int(KC, K - pc);
            const int last = pc + kc >= K;
            int flags = pc > 0 ? ACN_UK_ACCUM : 0;
            if (last && bias_mode == ACN_BIAS_ROW) flags |= ACN_UK_BIAS;
            if (last && g->relu && bias_mode != ACN_BIAS_COL) flags |= ACN_UK_RELU;
            for (int pb = 0; pb < panels_b; pb++)
                g->pack_b(pack_b + (size_t)pb * kc * NR, g->b_ctx, pc, kc, jc + pb * NR,
                          min_int(NR, nc - pb * NR), NR);
            /* One B micro-panel (kc x NR) meets every A panel (the weights,
             * M x kc): measured faster than the A-panel-outer order at batch 1
             * and 64. */
            for (int jr = 0; jr < panels_b; jr++)
                for (int ir = ir0; ir < ir1; ir++)
                    one_tile(g, pack_b, kc, pc, ir, jc, jr, nc, flags, last && bias_mode == ACN_BIAS_COL);
        }
    }
    return ACN_OK;
}

int acn_gemm_range(const acn_gemm_plan *g, int j0, int j1)
{
    return gemm_block(g, j0, j1, 0, (g->M + g->uk->MR - 1) / g->uk->MR);
}

/* Row groups for a GEMM with few column chunks. A 13x13 conv output at batch 1
 * (conv3-5) is 169 columns: three 48-wide panels and a 25-wide one, which two
 * threads shared 2 : 1.67. Each item is then a chunk times a range of A panels;
 * its B panel is packed once per range, a few percent of the item, so only a
 * GEMM of at least 2**24 multiply-adds is split (measured, 2 threads, AVX-512:
 * conv3-5 1.22/1.69/1.12 ms -> 1.16/1.62/1.07 with two groups; three or four
 * were slower, as was splitting conv1, whose 64 panels balance already). */
static int row_groups(const acn_gemm_plan *g, int chunks, int nt)
{
    const int panels_a = (g->M + g->uk->MR - 1) / g->uk->MR;
    if (chunks >= 4 * nt || (double)g->M * g->K * g->N < 16777216.0)
        return 1;
    return min_int(panels_a, (4 * nt + chunks - 1) / chunks);
}

int acn_gemm_parallel(const acn_gemm_plan *g, int nt)
{
    const int NR = g->uk->NR;
    const int panels = (g->N + NR - 1) / NR;
    /* Threads take column chunks from a shared counter instead of fixed halves:
     * on a shared (virtualised) machine one core often runs at half speed for a
     * while, and a static split then leaves the other core waiting at the end.
     * A chunk is one packed-B block, or smaller so that there are at least 16
     * per thread: a core that slows down near the end then holds the layer up
     * by little (conv1 at batch 1, AVX-512: 64 panels, in 8 chunks of 8 0.89 ms,
     * in 32 of 2 0.84-0.85; no change at batch 8 or 64, where the blocks bound
     * the chunks). */
    const int chunk = nt > 1 ? min_int(block_panels(g), panels / (16 * nt) > 1 ? panels / (16 * nt) : 1) : panels;
    const int chunks = panels > 0 ? (panels + chunk - 1) / chunk : 0;
    const int groups = nt > 1 ? row_groups(g, chunks, nt) : 1;
    const int items = chunks * groups, panels_a = (g->M + g->uk->MR - 1) / g->uk->MR;
    if (nt > items)
        nt = items;
    if (nt <= 1)
        return acn_gemm_range(g, 0, g->N);
    int status = ACN_OK;
    int next = 0;
#pragma omp parallel num_threads(nt)
    {
        for (;;) {
            int c;
#pragma omp atomic capture
            c = next++;
            if (c >= items)
                break;
            const int cc = c / groups, rg = c % groups;
            const int j0 = cc * chunk * NR, j1 = min_int((cc + 1) * chunk * NR, g->N);
            const int ir0 = (int)((long long)panels_a * rg / groups);
            const int ir1 = (int)((long long)panels_a * (rg + 1) / groups);
            int st = gemm_block(g, j0, j1, ir0, ir1);
            if (st != ACN_OK) {
#pragma omp atomic write
                status = st;
            }
        }
    }
    return status;
}

#define SGEMM_RESIDENT_PACK_A_FLOATS ((size_t)4 << 20)   /* 16 MB */

int sgemm_cpu(float *C, ptrdiff_t ldc,
              const float *A, ptrdiff_t rsa, ptrdiff_t csa,
              const float *B, ptrdiff_t rsb, ptrdiff_t csb,
              int M, int N, int K, const float *bias, int bias_mode, int relu)
{
    if (M <= 0 || N <= 0)
        return ACN_OK;
    const acn_ukernel *uk = acn_active_ukernel();
    const size_t pa_floats = acn_packed_a_floats(M, K > 0 ? K : 1, uk->MR);
    /* A packed A past this size (ac.linear on a large batch, beyond the network's FC
     * inputs up to batch ~400) lives only for this call: in the thread's buffer the
     * copy would stay resident for the thread's life. */
    float *own = pa_floats > SGEMM_RESIDENT_PACK_A_FLOATS ? acn_alloc_large(pa_floats * sizeof(float)) : NULL;
    float *pa = pa_floats > SGEMM_RESIDENT_PACK_A_FLOATS ? own : acn_thread_buffer(ACN_TLS_PACK_A, pa_floats);
    if (pa == NULL)
        return ACN_ENOMEM;
    if (K > 0)
        acn_pack_a(pa, A, rsa, csa, M, K, uk->MR);
    acn_strided_b b = {B, rsb, csb, uk->isa};
    acn_gemm_plan g = {uk, pa, M, N, K, acn_pack_b_strided, &b, C, ldc, N, 0, bias, bias_mode, relu};
    const int st = acn_gemm_parallel(&g, acn_get_num_threads());
    free(own);
    return st;
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
