/* Winograd F(2x2, 3x3) for the 3x3 and 5x5 stride-1 ungrouped convolutions
 * (AlexNet's conv2-5): each 2x2 output tile comes from a 4x4 input patch with 16
 * multiplications per (input, output) channel pair instead of 36, i.e. 2.25x
 * fewer FMAs in the GEMM that dominates the layer; a 5x5 kernel is four 3x3
 * blocks (64 instead of 100, 1.56x).
 *
 *   U = G g G^T      (weights, 4x4 per channel pair, packed once like conv weights)
 *   V = B^T d B      (input patches; columns of 16 GEMM B matrices, one per element)
 *   M[e] = U[e] V[e] (16 GEMMs with the same packed micro-kernels as the direct conv)
 *   Y = A^T M A      (2x2 output tile, then bias and ReLU)
 *
 * G, B^T and A^T hold only 0, +-1 and +-1/2, so the transforms are additions and
 * an exact halving; the error stays within the parity rule (tested per ISA).
 * Non-finite values spread differently through the transforms than through a
 * direct convolution (inf - inf in B^T d B), so a call that meets any
 * non-finite value reports ACN_WINO_NONFINITE and the caller recomputes the
 * layer directly: NaN / Inf then land exactly where PyTorch puts them.
 *
 * Work split: threads take chunks of WINO_CHUNK tiles from a shared counter and
 * run all three steps for a chunk alone (no barrier), so V and M of a chunk
 * stay in the thread's own cache.
 */
#include "cpu_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { WINO_CHUNK = 48, E = 16 };
/* A row of y (a chunk's outputs for one channel) with room for a last 16-wide read. */
enum { Y_COLS = WINO_CHUNK + 16 };

static int min_int(int a, int b) { return a < b ? a : b; }
static int max_int(int a, int b) { return a > b ? a : b; }

static _Atomic int wino_mode = ACN_WINO_AUTO;
static _Atomic int env_rejected;
static const char *const mode_names[] = {"off", "on", "auto"};

void acn_set_winograd(acn_wino_mode mode) { wino_mode = mode; }
acn_wino_mode acn_get_winograd(void) { return (acn_wino_mode)wino_mode; }
const char *acn_wino_mode_name(acn_wino_mode mode)
{
    return mode >= ACN_WINO_OFF && mode <= ACN_WINO_AUTO ? mode_names[mode] : "?";
}

int acn_wino_init_from_env(void)
{
    const char *want = getenv("ALEXNET_C_WINOGRAD");
    if (want == NULL || *want == '\0')
        return 0;
    for (int m = ACN_WINO_OFF; m <= ACN_WINO_AUTO; m++)
        if (strcmp(want, mode_names[m]) == 0) {
            wino_mode = m;
            return 0;
        }
    env_rejected = 1;
    return -1;
}

int acn_wino_env_rejected(void) { return env_rejected; }

int acn_wino_applies(int KH, int KW, int SH, int SW, int groups, int N, int OH, int OW, const acn_ukernel *uk)
{
    const int mode = wino_mode;
    if (mode == ACN_WINO_OFF || (KH != 3 && KH != 5) || KW != KH || SH != 1 || SW != 1 || groups != 1 || OH < 1
        || OW < 1)
        return 0;
    if (WINO_CHUNK % uk->NR != 0)
        return 0;
    if (mode == ACN_WINO_ON)
        return 1;
    /* Auto: where there are enough chunks for the threads to share; a 5x5
     * kernel saves less (1.56x against 2.25x) and needs more. Measured with 2
     * threads in AlexNet (13x13 conv3-5: 49 tiles per image, 27x27 conv2: 196),
     * alternating with the direct path: at batch 1 Winograd is slower in conv3-5
     * (one chunk and one tile) and no faster in conv2 (5 chunks, 3:2 between
     * the threads); at batch 2 it is 5-25% faster in conv3-5 and 0-13% in conv2;
     * at batch 64 1.3-1.5x in conv3-5 and 1.2-1.4x in conv2. */
    const long long tiles = (long long)N * ((OH + 1) / 2) * ((OW + 1) / 2);
    return tiles > (KH == 3 ? 1LL : 4LL) * WINO_CHUNK * max_int(acn_get_num_threads(), 2);
}

/* A K x K kernel (K = 3 or 5) is k_blocks(K)^2 blocks of 3x3 (zero past K), each
 * a 3x3 convolution of the input shifted by 3 rows / columns per block: the
 * GEMM depth becomes blocks * C, the transforms stay the exact F(2x2, 3x3) ones
 * (5x5: 64 multiplications per 2x2 tile and channel pair instead of 100). */
static int k_blocks(int K) { return (K + 2) / 3; }

int acn_wino_would_apply(int KH, int KW, int stride, int groups, int N, int OH, int OW)
{
    return acn_wino_applies(KH, KW, stride, stride, groups, N, OH, OW, acn_active_ukernel());
}

size_t acn_wino_packed_floats(int C, int OC, int K, int MR)
{
    return (size_t)E * acn_packed_a_floats(OC, k_blocks(K) * k_blocks(K) * C, MR);
}

/* weight (OC, C, K, K) -> U[e] (OC x blocks*C, column blk*C + c) packed for MR,
 * e = 4*row + col of G g G^T. Returns 1 when every U value is finite, 0 when
 * not (then never used: its NaN/Inf would not land where PyTorch's do), -1
 * without memory. */
int acn_wino_pack_weights(float *dst, const float *weight, int C, int OC, int K, int MR)
{
    const int nb = k_blocks(K), KD = nb * nb * C;
    const size_t plane = (size_t)OC * KD, per = acn_packed_a_floats(OC, KD, MR);
    float *u = malloc(E * plane * sizeof(float) + 1);
    if (u == NULL)
        return -1;
    int finite = 1;
    for (size_t p = 0; p < (size_t)OC * C * nb * nb; p++) {
        const size_t oc = p / ((size_t)C * nb * nb), blk = p / C % (nb * nb), c = p % C;
        const int by = 3 * (int)(blk / nb), bx = 3 * (int)(blk % nb);
        const float *w = weight + (oc * C + c) * K * K;
        float g[9];
        for (int i = 0; i < 9; i++)
            g[i] = by + i / 3 < K && bx + i % 3 < K ? w[(by + i / 3) * K + bx + i % 3] : 0.0f;
        const size_t at = oc * KD + blk * C + c;
        float t[4][3];   /* G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 */
        for (int j = 0; j < 3; j++) {
            const float h = 0.5f * (g[j] + g[6 + j]), m = 0.5f * g[3 + j];
            t[0][j] = g[j];
            t[1][j] = h + m;
            t[2][j] = h - m;
            t[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; i++) {   /* (G g) G^T, the same along the columns */
            const float h = 0.5f * (t[i][0] + t[i][2]), m = 0.5f * t[i][1];
            const float row[4] = {t[i][0], h + m, h - m, t[i][2]};
            for (int j = 0; j < 4; j++) {
                u[(size_t)(4 * i + j) * plane + at] = row[j];
                finite &= row[j] - row[j] == 0.0f;
            }
        }
    }
    for (int e = 0; e < E; e++)
        acn_pack_a(dst + e * per, u + e * plane, KD, 1, OC, KD, MR);
    free(u);
    return finite;
}

typedef struct wino_job wino_job;

/* A run of tiles of one tile row inside a chunk: image n, tile row ty, tiles
 * [xa, xb), at chunk columns col .. col + xb - xa - 1. */
typedef struct { int n, ty, xa, xb, col; } tile_run;

/* The transform steps for one ISA, chosen once per call: the plain C
 * references, or their AVX-512 versions. */
typedef struct {
    void (*input_tiles)(const wino_job *j, const tile_run *r, const float *plane, float *v, size_t vstride);
    int (*output_math)(const float *m, size_t mstride, int ncols, float b, float y[4][Y_COLS]);
    void (*store_run)(const wino_job *j, const tile_run *r, float y[4][Y_COLS], float *oplane);
} wino_steps;

struct wino_job {
    const float *inp;
    float *out;
    const float *u;      /* packed U, E blocks of per_e floats */
    const float *bias;
    const acn_ukernel *uk;
    int N, C, H, W, OC, OH, OW, PH, PW, TH, TW, relu;
    int nb, KD;          /* 3x3 blocks per kernel side; GEMM depth nb * nb * C */
    size_t per_e;
    const wino_steps *steps;
};

/* The next run from chunk column col (tile t) up to the chunk's end or the end
 * of the tile row, cut at NR panel borders so that a run's V columns are
 * contiguous. */
static tile_run next_run(const wino_job *j, long long t, int col, int ncols, int NR)
{
    const long long per_img = (long long)j->TH * j->TW;
    tile_run r;
    r.n = (int)(t / per_img);
    const int rem = (int)(t % per_img);
    r.ty = rem / j->TW;
    r.xa = rem % j->TW;
    const int panel_end = (col / NR + 1) * NR;
    r.xb = r.xa + min_int(j->TW - r.xa, min_int(ncols, panel_end) - col);
    r.col = col;
    return r;
}

/* (B^T d) B for one run and one channel, d being the 4 input rows under the
 * run's tiles (zero outside the image: the padding): element 4i + k of tile t
 * to v[(4i + k) * vstride + t]. The plain reference of input_tiles_avx512. */
static void input_tiles_plain(const wino_job *j, const tile_run *r, const float *plane, float *v, size_t vstride)
{
    const int nt = r->xb - r->xa, x0 = 2 * r->xa - j->PW, ncol = 2 * nt + 2;
    float d[4][2 * WINO_CHUNK + 2], x4[4][2 * WINO_CHUNK + 2];
    for (int q = 0; q < 4; q++) {
        const int iy = 2 * r->ty - j->PH + q;
        for (int u = 0; u < ncol; u++)
            d[q][u] = iy >= 0 && iy < j->H && x0 + u >= 0 && x0 + u < j->W ? plane[(size_t)iy * j->W + x0 + u] : 0.0f;
    }
    for (int u = 0; u < ncol; u++) {
        x4[0][u] = d[0][u] - d[2][u];
        x4[1][u] = d[1][u] + d[2][u];
        x4[2][u] = d[2][u] - d[1][u];
        x4[3][u] = d[1][u] - d[3][u];
    }
    for (int i = 0; i < 4; i++) {
        const float *x = x4[i];
        float *v0 = v + (size_t)(4 * i) * vstride, *v1 = v0 + vstride, *v2 = v1 + vstride, *v3 = v2 + vstride;
        for (int t = 0; t < nt; t++) {
            v0[t] = x[2 * t] - x[2 * t + 2];
            v1[t] = x[2 * t + 1] + x[2 * t + 2];
            v2[t] = x[2 * t + 2] - x[2 * t + 1];
            v3[t] = x[2 * t + 1] - x[2 * t + 3];
        }
    }
}

/* A^T M A of every tile of a chunk for one output channel, plus bias: y[q][t]
 * for output q = 2a + b of tile t; returns how many were not finite. */
static int output_math_plain(const float *m, size_t mstride, int ncols, float b, float y[4][Y_COLS])
{
    int bad = 0;
    for (int t = 0; t < ncols; t++) {
        float w[2][4];
        for (int s = 0; s < 4; s++) {
            const float m0 = m[(size_t)s * mstride + t], m1 = m[(size_t)(4 + s) * mstride + t];
            const float m2 = m[(size_t)(8 + s) * mstride + t], m3 = m[(size_t)(12 + s) * mstride + t];
            w[0][s] = m0 + m1 + m2;
            w[1][s] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {
            const float y0 = w[a][0] + w[a][1] + w[a][2] + b, y1 = w[a][1] - w[a][2] - w[a][3] + b;
            bad += (y0 - y0 != 0.0f) + (y1 - y1 != 0.0f);   /* NaN or +-Inf */
            y[2 * a][t] = y0;
            y[2 * a + 1][t] = y1;
        }
    }
    return bad;
}

#if ACN_X86
/* Lanes l of a 16-lane block at local column col with ua <= col + l < ub. */
static inline __mmask16 lanes_between(int col, int ua, int ub)
{
    const int lo = min_int(max_int(ua - col, 0), 16), hi = min_int(max_int(ub - col, 0), 16);
    return (__mmask16)(acn_lanes_left((size_t)hi) & ~acn_lanes_left((size_t)lo));
}

/* Row iy of a plane, local columns col .. col + 15 of a run (x0 + col in the
 * image), zero outside [ua, ub) and outside the image's rows. */
__attribute__((target("avx512f")))
static inline __m512 load_cols(const wino_job *j, const float *plane, int iy, int x0, int col, int ua, int ub)
{
    if (iy < 0 || iy >= j->H)
        return _mm512_setzero_ps();
    /* Address arithmetic in integers: column x0 + col may lie left of the
     * plane; those lanes are masked off and never read. */
    const uintptr_t row = (uintptr_t)(plane + (size_t)iy * j->W);
    return _mm512_maskz_loadu_ps(lanes_between(col, ua, ub),
                                 (const float *)(row + (intptr_t)(x0 + col) * (intptr_t)sizeof(float)));
}

/* d B of one row x of B^T d (columns 0..33 of a 16-tile step in x[0..2]):
 * even and odd columns by two-source permutes, masked stores for the tail. */
__attribute__((target("avx512f")))
static inline void row_times_b(const __m512 x[3], float *v0, size_t vstride, __mmask16 k)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 lo2 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(x[1]), _mm512_castps_si512(x[0]), 2));
    const __m512 hi2 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(x[2]), _mm512_castps_si512(x[1]), 2));
    const __m512 e0 = _mm512_permutex2var_ps(x[0], even, x[1]), o0 = _mm512_permutex2var_ps(x[0], odd, x[1]);
    const __m512 e2 = _mm512_permutex2var_ps(lo2, even, hi2), o2 = _mm512_permutex2var_ps(lo2, odd, hi2);
    _mm512_mask_storeu_ps(v0, k, _mm512_sub_ps(e0, e2));
    _mm512_mask_storeu_ps(v0 + vstride, k, _mm512_add_ps(o0, e2));
    _mm512_mask_storeu_ps(v0 + 2 * vstride, k, _mm512_sub_ps(e2, o0));
    _mm512_mask_storeu_ps(v0 + 3 * vstride, k, _mm512_sub_ps(o0, o2));
}

/* input_tiles_plain in registers, 16 tiles per step. */
__attribute__((target("avx512f")))
static void input_tiles_avx512(const wino_job *j, const tile_run *r, const float *plane, float *v, size_t vstride)
{
    const int nt = r->xb - r->xa, x0 = 2 * r->xa - j->PW, y0 = 2 * r->ty - j->PH;
    const int ua = max_int(0, -x0), ub = min_int(2 * nt + 2, j->W - x0);
    for (int t = 0; t < nt; t += 16) {
        __m512 x[4][3];
#pragma GCC unroll 3
        for (int s = 0; s < 3; s++) {
            const int col = 2 * t + 16 * s;
            const __m512 d0 = load_cols(j, plane, y0, x0, col, ua, ub), d1 = load_cols(j, plane, y0 + 1, x0, col, ua, ub);
            const __m512 d2 = load_cols(j, plane, y0 + 2, x0, col, ua, ub), d3 = load_cols(j, plane, y0 + 3, x0, col, ua, ub);
            x[0][s] = _mm512_sub_ps(d0, d2);
            x[1][s] = _mm512_add_ps(d1, d2);
            x[2][s] = _mm512_sub_ps(d2, d1);
            x[3][s] = _mm512_sub_ps(d1, d3);
        }
        const __mmask16 k = acn_lanes_left((size_t)(nt - t));
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            row_times_b(x[i], v + (size_t)(4 * i) * vstride + t, vstride, k);
    }
}

/* output_math_plain 16 tiles at a time (GCC leaves that loop scalar), the same sums
 * in the same order. */
__attribute__((target("avx512f")))
static int output_math_avx512(const float *m, size_t mstride, int ncols, float b, float y[4][Y_COLS])
{
    const __m512 bv = _mm512_set1_ps(b), zero = _mm512_setzero_ps();
    int bad = 0;
    for (int t = 0; t < ncols; t += 16) {
        const __mmask16 k = acn_lanes_left((size_t)(ncols - t));
        __m512 w0[4], w1[4];
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            const __m512 m0 = _mm512_maskz_loadu_ps(k, m + (size_t)s * mstride + t);
            const __m512 m1 = _mm512_maskz_loadu_ps(k, m + (size_t)(4 + s) * mstride + t);
            const __m512 m2 = _mm512_maskz_loadu_ps(k, m + (size_t)(8 + s) * mstride + t);
            const __m512 m3 = _mm512_maskz_loadu_ps(k, m + (size_t)(12 + s) * mstride + t);
            w0[s] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            w1[s] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        const __m512 r[4] = {
            _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(w0[0], w0[1]), w0[2]), bv),
            _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(w0[1], w0[2]), w0[3]), bv),
            _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(w1[0], w1[1]), w1[2]), bv),
            _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(w1[1], w1[2]), w1[3]), bv)};
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            /* x - x is NaN exactly when x is NaN or +-Inf */
            bad += __builtin_popcount(_mm512_mask_cmp_ps_mask(k, _mm512_sub_ps(r[q], r[q]), zero, _CMP_NEQ_UQ));
            _mm512_storeu_ps(y[q] + t, r[q]);
        }
    }
    return bad;
}

/* store_run_plain with the two columns of each tile interleaved by permutes and
 * written with masked stores. */
__attribute__((target("avx512f")))
static void store_run_avx512(const wino_job *j, const tile_run *r, float y[4][Y_COLS], float *oplane)
{
    const int nt = r->xb - r->xa, ox = 2 * r->xa, oy = 2 * r->ty;
    const int nout = min_int(2 * nt, j->OW - ox);
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512 zero = _mm512_setzero_ps();
    for (int a = 0; a < 2 && oy + a < j->OH; a++) {
        float *o = oplane + (size_t)(oy + a) * j->OW + ox;
        for (int t = 0; t < nt; t += 16) {
            __m512 y0 = _mm512_loadu_ps(y[2 * a] + r->col + t), y1 = _mm512_loadu_ps(y[2 * a + 1] + r->col + t);
            if (j->relu) {   /* max(0, x) keeps a NaN x */
                y0 = _mm512_max_ps(zero, y0);
                y1 = _mm512_max_ps(zero, y1);
            }
            const int left = nout - 2 * t;
            _mm512_mask_storeu_ps(o + 2 * t, acn_lanes_left((size_t)left), _mm512_permutex2var_ps(y0, lo, y1));
            if (left > 16)
                _mm512_mask_storeu_ps(o + 2 * t + 16, acn_lanes_left((size_t)(left - 16)), _mm512_permutex2var_ps(y0, hi, y1));
        }
    }
}
#endif

/* y (bias added) to the output channel's plane for the tiles of one run,
 * ReLU on the way; tile t of the run is chunk column r->col + t. */
static void store_run_plain(const wino_job *j, const tile_run *r, float y[4][Y_COLS], float *oplane)
{
    const int nt = r->xb - r->xa, ox = 2 * r->xa, oy = 2 * r->ty;
    const int full = min_int(nt, (j->OW - ox) / 2);   /* tiles with both columns inside */
    for (int a = 0; a < 2 && oy + a < j->OH; a++) {
        const float *y0 = y[2 * a] + r->col, *y1 = y[2 * a + 1] + r->col;
        float *o = oplane + (size_t)(oy + a) * j->OW + ox;
        if (j->relu) {
            for (int t = 0; t < full; t++) {
                o[2 * t] = acn_relu1(y0[t]);
                o[2 * t + 1] = acn_relu1(y1[t]);
            }
            if (full < nt)
                o[2 * full] = acn_relu1(y0[full]);
        } else {
            for (int t = 0; t < full; t++) {
                o[2 * t] = y0[t];
                o[2 * t + 1] = y1[t];
            }
            if (full < nt)
                o[2 * full] = y0[full];
        }
    }
}

static const wino_steps plain_steps = {input_tiles_plain, output_math_plain, store_run_plain};
#if ACN_X86
static const wino_steps avx512_steps = {input_tiles_avx512, output_math_avx512, store_run_avx512};
#endif

static const wino_steps *steps_for(const acn_ukernel *uk)
{
#if ACN_X86
    if (uk->isa == ACN_ISA_AVX512)
        return &avx512_steps;
#else
    (void)uk;
#endif
    return &plain_steps;
}

/* A chunk: ncols tiles from tile t0, as runs cut at the NR panels (for V) and
 * at tile rows only (for the outputs). */
typedef struct {
    long long t0;
    int ncols, nin, nout;
    tile_run in[WINO_CHUNK], out[WINO_CHUNK];
} chunk_plan;

static void plan_chunk(const wino_job *j, long long t0, int ncols, chunk_plan *p)
{
    p->t0 = t0;
    p->ncols = ncols;
    p->nin = p->nout = 0;
    for (int col = 0; col < ncols; p->nin++) {
        p->in[p->nin] = next_run(j, t0 + col, col, ncols, j->uk->NR);
        col += p->in[p->nin].xb - p->in[p->nin].xa;
    }
    for (int col = 0; col < ncols; p->nout++) {
        p->out[p->nout] = next_run(j, t0 + col, col, ncols, WINO_CHUNK);
        col += p->out[p->nout].xb - p->out[p->nout].xa;
    }
}

/* Rows [k0, k1) of the chunk's V (row k = block * C + channel): E x (panels x
 * KD x NR) packed-B panels. Channel-outer: the 16 rows of V that a channel
 * writes are whole cache lines before the next channel starts (run-outer
 * measured slower). */
static void chunk_input(const wino_job *j, const chunk_plan *p, float *V, int k0, int k1)
{
    const int NR = j->uk->NR, KD = j->KD, C = j->C, ncols = p->ncols;
    const int panels = (ncols + NR - 1) / NR;
    const size_t vstride = (size_t)(WINO_CHUNK / NR) * KD * NR;   /* between elements e */
    if (ncols < panels * NR)   /* the last chunk: the rest of its last panel is read, not used */
        for (int e = 0; e < E; e++)
            for (int k = k0; k < k1; k++)
                memset(V + e * vstride + ((size_t)(panels - 1) * KD + k) * NR + ncols % NR, 0,
                       (size_t)(NR - ncols % NR) * sizeof(float));
    const size_t img_floats = (size_t)C * j->H * j->W, plane = (size_t)j->H * j->W;
    for (int k = k0; k < k1; k++) {
        const int blk = k / C, c = k % C;
        wino_job shifted = *j;   /* block (by, bx) reads the input 3 by, 3 bx further on */
        shifted.PH -= 3 * (blk / j->nb);
        shifted.PW -= 3 * (blk % j->nb);
        for (int q = 0; q < p->nin; q++) {
            const tile_run *r = &p->in[q];
            float *v = V + ((size_t)(r->col / NR) * KD + k) * NR + r->col % NR;
            j->steps->input_tiles(&shifted, r, j->inp + r->n * img_floats + c * plane, v, vstride);
        }
    }
}

/* Output channels [ir MR, ir MR + MR) of a chunk: the 16 GEMMs, then at once the
 * output transform, so that M (E x MR x WINO_CHUNK) is a small buffer in L1
 * (transforming after all panels measured slower: U streaming through L2 had
 * evicted M by then). V stays in L2, re-read by every panel as B panels are
 * in a direct conv. Returns the count of non-finite results. */
static long chunk_panel(const wino_job *j, const chunk_plan *p, const float *V, float *Mb, int ir)
{
    const acn_ukernel *uk = j->uk;
    const int NR = uk->NR, MR = uk->MR, KD = j->KD, ncols = p->ncols;
    const int panels = (ncols + NR - 1) / NR;
    const size_t vstride = (size_t)(WINO_CHUNK / NR) * KD * NR, mstride = (size_t)MR * WINO_CHUNK;
    for (int e = 0; e < E; e++) {
        const float *pa = j->u + e * j->per_e + (size_t)ir * KD * MR;
        for (int q = 0; q < panels; q++) {
            const float *pb = V + e * vstride + (size_t)q * KD * NR;
            const int n = min_int(NR, ncols - q * NR);
            float *c = Mb + e * mstride + q * NR;
            if (n < NR && uk->narrow != NULL && n <= NR - uk->narrow_step)
                uk->narrow(KD, pa, pb, c, WINO_CHUNK, n);
            else
                uk->kernel(KD, pa, pb, c, WINO_CHUNK, 0, NULL);
        }
    }
    long bad = 0;
    float y[4][Y_COLS] __attribute__((aligned(64)));
    for (int oc = ir * MR; oc < min_int(j->OC, ir * MR + MR); oc++) {
        const float *m = Mb + (size_t)(oc - ir * MR) * WINO_CHUNK;
        const float b = j->bias ? j->bias[oc] : 0.0f;
        bad += j->steps->output_math(m, mstride, ncols, b, y);
        for (int q = 0; q < p->nout; q++)
            j->steps->store_run(j, &p->out[q], y, j->out + ((size_t)p->out[q].n * j->OC + oc) * j->OH * j->OW);
    }
    return bad;
}

static int chunk_cols(long long tiles, long long c)
{
    return (int)(tiles - c * WINO_CHUNK < WINO_CHUNK ? tiles - c * WINO_CHUNK : WINO_CHUNK);
}

int acn_wino_conv(float *out, const float *inp, const float *u, const acn_ukernel *uk, const float *bias,
                  int N, int C, int H, int W, int OC, int K, int PH, int PW, int relu)
{
    const int OH = H + 2 * PH - K + 1, OW = W + 2 * PW - K + 1, nb = k_blocks(K);
    if (OH < 1 || OW < 1 || N <= 0 || OC <= 0 || C <= 0 || (K != 3 && K != 5) || WINO_CHUNK % uk->NR != 0)
        return ACN_EINVAL;
    wino_job j = {inp, out, u, bias, uk, N, C, H, W, OC, OH, OW, PH, PW, (OH + 1) / 2, (OW + 1) / 2, relu,
                  nb, nb * nb * C, acn_packed_a_floats(OC, nb * nb * C, uk->MR), steps_for(uk)};
    const long long tiles = (long long)N * j.TH * j.TW;
    const long long chunks = (tiles + WINO_CHUNK - 1) / WINO_CHUNK;
    const size_t v_floats = (size_t)E * j.KD * WINO_CHUNK;
    const size_t m_floats = (size_t)E * uk->MR * WINO_CHUNK;
    int nt = acn_get_num_threads();
    if (nt > chunks)
        nt = (int)chunks;
    long long next = 0;
    long bad = 0;
    int status = ACN_OK;
    /* (Threads sharing each chunk instead, for small batches, measured slower
     * at batch 1 and 2: V or U then comes from L3 for every panel.) */
#pragma omp parallel num_threads(nt) reduction(+ : bad) if (nt > 1)
    {
        float *V = acn_thread_buffer(ACN_TLS_WINO_V, v_floats);
        float *Mb = acn_thread_buffer(ACN_TLS_WINO_M, m_floats);
        if (V == NULL || Mb == NULL) {
#pragma omp atomic write
            status = ACN_ENOMEM;
        } else {
            chunk_plan plan;
            for (;;) {
                long long c;
#pragma omp atomic capture
                c = next++;
                if (c >= chunks)
                    break;
                plan_chunk(&j, c * WINO_CHUNK, chunk_cols(tiles, c), &plan);
                chunk_input(&j, &plan, V, 0, j.KD);
                for (int ir = 0; ir < (OC + uk->MR - 1) / uk->MR; ir++)
                    bad += chunk_panel(&j, &plan, V, Mb, ir);
            }
        }
    }
    if (status != ACN_OK)
        return status;
    return bad ? ACN_WINO_NONFINITE : ACN_OK;
}
