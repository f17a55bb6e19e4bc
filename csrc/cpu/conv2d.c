/* Convolution as one implicit GEMM over the whole batch:
 *   out(OC, N*OH*OW) = weight(OC, C*KH*KW) x col(C*KH*KW, N*OH*OW)
 * where col is never materialised: the GEMM's B-packing reads the images
 * directly (pack_b_im2col), and column j = n*P + p is stored into image n's
 * (OC, P) plane (the plan's segments). Threads split the columns, so batch 1
 * splits pixels and batch 64 effectively splits images, both without barriers.
 * The weights are packed once per call here, once per net in net.c. */
#include "cpu_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The B-packing reads a zero-padded copy of the input, so that no tap ever
 * needs a bounds check: plane (n, c) is Hp = H + 2*PH rows; with a column
 * stride SW > 1 each padded row is stored as SW "phases" one after the other,
 * phase r = padded columns r, r+SW, r+2*SW..., each Wq = ceil((W + 2*PW)/SW)
 * long. Column ow of tap kw then reads phase kw*DW % SW at index ow + kw*DW / SW:
 * consecutive output columns read consecutive floats, whatever the stride and
 * dilation.
 * (Stride 1 without padding reads the image itself.) */
typedef struct {
    const float *img;          /* image 0 of the group, padded layout */
    ptrdiff_t img_stride;      /* floats between images */
    ptrdiff_t ch_stride;       /* floats between channels: Hp * SW * Wq */
    ptrdiff_t row_stride;      /* floats between padded rows: SW * Wq */
    int Wq, KH, KW, SH, SW, OW, P;
    int avx512;                /* copy runs with masked AVX-512 loads/stores */
    const ptrdiff_t *koff;     /* koff[k]: where row k = (c, kh, kw) starts, from img */
} im2col_ctx;

/* A piece of one packed row: len (<= 16) floats from src + k-offset to dst. */
typedef struct { ptrdiff_t src; int off, len; } col_run;

enum { MAX_RUNS = 128 };

#if ACN_X86
#include <immintrin.h>
/* One masked load + store per run of <= 16 columns: no call, no tail loop. */
__attribute__((target("avx512f")))
static void pack_rows_avx512(float *d, int NR, const float *img, const ptrdiff_t *koff, int kc,
                             const col_run *runs, int nruns)
{
    __mmask16 mask[MAX_RUNS];
    for (int i = 0; i < nruns; i++)
        mask[i] = acn_lanes_left((size_t)runs[i].len);
    for (int k = 0; k < kc; k++, d += NR) {
        const float *src = img + koff[k];
        for (int i = 0; i < nruns; i++)
            _mm512_mask_storeu_ps(d + runs[i].off, mask[i], _mm512_maskz_loadu_ps(mask[i], src + runs[i].src));
    }
}

/* dp[j] = sp[j * SW] for j < n: one 16-lane gather per 16 outputs (the scalar
 * loop took ~3 cycles per float, 8% of conv1 at batch 64). */
__attribute__((target("avx512f")))
static void strided_copy_avx512(float *dp, const float *sp, int SW, int n)
{
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(SW));
    for (int j = 0; j < n; j += 16) {
        const __mmask16 k = acn_lanes_left((size_t)(n - j));
        const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, sp + (ptrdiff_t)j * SW, 4);
        _mm512_mask_storeu_ps(dp + j, k, v);
    }
}

/* One padded row split into its 4 stride phases (conv1: stride 4), 64 padded
 * columns at a time: four loads, then per phase two permutes and a blend
 * (batch 1's input on one core: 160 us with the 16-lane gathers, 50 with this).
 * A block that reaches into the padding is first assembled in a zeroed copy. */
__attribute__((target("avx512f")))
static void phase_split4_avx512(float *d, const float *s, int W, int PW, int Wq)
{
    /* lane i of phase r is padded column r + 4i: from (v0, v1) for i < 8 and
     * from (v2, v3), 32 columns on, for i >= 8, hence the index mod 32 */
    static const int32_t every4[16] = {0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60};
    __m512i idx[4];
    for (int r = 0; r < 4; r++)
        idx[r] = _mm512_and_si512(_mm512_add_epi32(_mm512_loadu_si512(every4), _mm512_set1_epi32(r)),
                                  _mm512_set1_epi32(31));
    for (int j = 0; j < Wq; j += 16) {
        const long long p0 = 4LL * j;   /* first padded column of the block */
        float tmp[64] __attribute__((aligned(64)));
        const float *src = tmp;
        if (p0 >= PW && p0 + 64 <= (long long)PW + W) {
            src = s + (p0 - PW);
        } else {
            memset(tmp, 0, sizeof tmp);
            const long long q0 = p0 - PW > 0 ? p0 - PW : 0, q1 = p0 + 64 - PW < W ? p0 + 64 - PW : W;
            if (q1 > q0)
                memcpy(tmp + (q0 - (p0 - PW)), s + q0, (size_t)(q1 - q0) * sizeof(float));
        }
        const __m512 v0 = _mm512_loadu_ps(src), v1 = _mm512_loadu_ps(src + 16);
        const __m512 v2 = _mm512_loadu_ps(src + 32), v3 = _mm512_loadu_ps(src + 48);
        const __mmask16 keep = acn_lanes_left((size_t)(Wq - j));
        for (int r = 0; r < 4; r++) {
            const __m512 lo = _mm512_permutex2var_ps(v0, idx[r], v1), hi = _mm512_permutex2var_ps(v2, idx[r], v3);
            _mm512_mask_storeu_ps(d + (size_t)r * Wq + j, keep, _mm512_mask_blend_ps(0xFF00, lo, hi));
        }
    }
}
#endif

static void pack_rows_plain(float *d, int NR, const float *img, const ptrdiff_t *koff, int kc,
                            const col_run *runs, int nruns)
{
    for (int k = 0; k < kc; k++, d += NR) {
        const float *src = img + koff[k];
        for (int i = 0; i < nruns; i++)
            memcpy(d + runs[i].off, src + runs[i].src, (size_t)runs[i].len * sizeof(float));
    }
}

/* Row k of col is (c, kh, kw); column j is (n, oh, ow). A panel's NR columns
 * break into runs that share (n, oh), each a contiguous slice of one padded
 * (phase) input row, cut into pieces of <= 16. Where row k starts (koff) is
 * computed once per convolution and where each run starts once per panel, so
 * the copy loop does no index arithmetic: packing B would otherwise cost as
 * much as conv1's arithmetic (64 output channels reuse each packed float only
 * 64 times). */
static void pack_b_im2col(float *dst, const void *vctx, int p0, int kc, int j0, int ncols, int NR)
{
    const im2col_ctx *x = vctx;
    col_run runs[MAX_RUNS];
    for (int panel = 0; panel * NR < ncols; panel++) {
        const int jbase = j0 + panel * NR;
        const int jn = ncols - panel * NR < NR ? ncols - panel * NR : NR;
        float *d = dst + (size_t)panel * kc * NR;
        int nruns = 0;
        for (int j = 0; j < jn && nruns < MAX_RUNS;) {
            const int jj = jbase + j, n = jj / x->P, p = jj - n * x->P;
            const int oh = p / x->OW, ow = p - oh * x->OW;
            int len = x->OW - ow;
            if (len > jn - j) len = jn - j;
            if (len > 16) len = 16;
            runs[nruns++] = (col_run){n * x->img_stride + (ptrdiff_t)oh * x->SH * x->row_stride + ow, j, len};
            j += len;
        }
        if (jn < NR)
            for (int k = 0; k < kc; k++)
                memset(d + (size_t)k * NR + jn, 0, (size_t)(NR - jn) * sizeof(float));
#if ACN_X86
        if (x->avx512) {
            pack_rows_avx512(d, NR, x->img, x->koff + p0, kc, runs, nruns);
            continue;
        }
#endif
        pack_rows_plain(d, NR, x->img, x->koff + p0, kc, runs, nruns);
    }
}

static int needs_padded_copy(int SW, int PH, int PW) { return SW > 1 || PH > 0 || PW > 0; }

/* Columns of one stride phase of a padded row. In 64 bits: the caller bounds only
 * W + 2*PW by INT_MAX, and the rounding up adds SW - 1; the quotient fits an int. */
static int phase_cols(int W, int SW, int PW) { return (int)(((long long)W + 2LL * PW + SW - 1) / SW); }

/* Floats of the padded copy of the input (0 when the image is read directly). */
size_t acn_conv_phase_floats(int N, int C, int H, int W, int SW, int PH, int PW)
{
    if (!needs_padded_copy(SW, PH, PW))
        return 0;
    return (size_t)N * C * (size_t)(H + 2 * PH) * (size_t)SW * (size_t)phase_cols(W, SW, PW);
}

static void to_padded_layout(float *dst, const float *inp, ptrdiff_t planes, int H, int W, int SW, int PH, int PW,
                             int nt)
{
    const int Hp = H + 2 * PH, Wq = phase_cols(W, SW, PW);
    const size_t row = (size_t)SW * Wq;
#if ACN_X86
    const int avx512 = acn_active_isa() == ACN_ISA_AVX512;
#endif
    /* Split over (plane, row): batch 1's conv1 input has only 3 planes. */
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1 && (size_t)planes * Hp * row > 32768)
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        for (int h = 0; h < Hp; h++) {
            float *d = dst + ((size_t)pl * Hp + h) * row;
            const int ih = h - PH;
            if (ih < 0 || ih >= H) {
                memset(d, 0, row * sizeof(float));
                continue;
            }
            const float *s = inp + ((size_t)pl * H + ih) * W;
#if ACN_X86
            if (avx512 && SW == 4) {
                phase_split4_avx512(d, s, W, PW, Wq);
                continue;
            }
#endif
            if (SW == 1) {   /* [PW zeros | the row | zeros to Wq] */
                memset(d, 0, (size_t)PW * sizeof(float));
                memcpy(d + PW, s, (size_t)W * sizeof(float));
                memset(d + PW + W, 0, (size_t)(Wq - PW - W) * sizeof(float));
                continue;
            }
            for (int r = 0; r < SW; r++) {
                /* phase r holds input columns iw = j*SW + r - PW; [j0, j1) are inside */
                float *dp = d + (size_t)r * Wq;
                const int j0 = PW - r > 0 ? (PW - r + SW - 1) / SW : 0;
                int j1 = W + PW - r > 0 ? (W + PW - r + SW - 1) / SW : 0;
                if (j1 > Wq) j1 = Wq;
                if (j1 < j0) j1 = j0;
                const float *sp = s + (ptrdiff_t)j0 * SW + r - PW;
                for (int j = 0; j < j0; j++) dp[j] = 0.0f;
#if ACN_X86
                if (avx512)
                    strided_copy_avx512(dp + j0, sp, SW, j1 - j0);
                else
#endif
                    for (int j = j0; j < j1; j++) dp[j] = sp[(ptrdiff_t)(j - j0) * SW];
                for (int j = j1; j < Wq; j++) dp[j] = 0.0f;
            }
        }
    }
}

size_t conv2d_workspace_floats(int C, int H, int W, int OC, int KH, int KW,
                               int SH, int SW, int PH, int PW, int groups)
{
    (void)C; (void)H; (void)W; (void)OC; (void)KH; (void)KW;
    (void)SH; (void)SW; (void)PH; (void)PW; (void)groups;
    return 0;   /* implicit GEMM: packing buffers are per thread, see gemm.c */
}

/* Packed weights of every group, one after the other, in the uk->MR layout. */
size_t acn_conv_packed_floats(int C, int OC, int KH, int KW, int groups, int MR)
{
    return (size_t)groups * acn_packed_a_floats(OC / groups, C / groups * KH * KW, MR);
}

void acn_conv_pack_weights(float *dst, const float *weight, int C, int OC, int KH, int KW, int groups, int MR)
{
    const int OCg = OC / groups, Kg = C / groups * KH * KW;
    const size_t per_group = acn_packed_a_floats(OCg, Kg, MR);
    for (int g = 0; g < groups; g++)
        acn_pack_a(dst + g * per_group, weight + (size_t)g * OCg * Kg, Kg, 1, OCg, Kg, MR);
}

int acn_conv2d_packed(float *out, const float *inp, const float *packed, const acn_ukernel *uk,
                      const float *bias, int N, int C, int H, int W, int OC, int KH, int KW,
                      int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, float *work)
{
    const int OH = (int)acn_out_size(H, KH, SH, PH, DH), OW = (int)acn_out_size(W, KW, SW, PW, DW);
    const int Cg = C / groups, OCg = OC / groups, Kg = Cg * KH * KW, P = OH * OW;
    const size_t per_group = acn_packed_a_floats(OCg, Kg, uk->MR);
    if ((long long)N * P > 0x7fffffff)
        return ACN_EINVAL;
    const int nt = acn_get_num_threads();
    const int Hp = H + 2 * PH, Wq = phase_cols(W, SW, PW);
    const float *img = inp;
    if (needs_padded_copy(SW, PH, PW)) {
        if (work == NULL)
            work = acn_thread_buffer(ACN_TLS_WORK, acn_conv_phase_floats(N, C, H, W, SW, PH, PW));
        if (work == NULL)
            return ACN_ENOMEM;
        to_padded_layout(work, inp, (ptrdiff_t)N * C, H, W, SW, PH, PW, nt);
        img = work;
    }
    const ptrdiff_t row_stride = (ptrdiff_t)SW * Wq, ch_stride = (ptrdiff_t)Hp * row_stride;
    /* The calling thread's buffer, read by the whole team below. */
    ptrdiff_t *koff = (ptrdiff_t *)acn_thread_buffer(ACN_TLS_CONV_ROWS, (size_t)Kg * sizeof *koff / sizeof(float));
    if (koff == NULL)
        return ACN_ENOMEM;
    for (int k = 0, khw = KH * KW; k < Kg; k++) {
        const int c = k / khw, kh = k % khw / KW * DH, kw = k % KW * DW;
        koff[k] = (ptrdiff_t)c * ch_stride + (ptrdiff_t)kh * row_stride + (ptrdiff_t)(kw % SW) * Wq + kw / SW;
    }
    for (int g = 0; g < groups; g++) {
        im2col_ctx ctx = {img + (size_t)g * Cg * ch_stride, (ptrdiff_t)C * ch_stride, ch_stride, row_stride,
                          Wq, KH, KW, SH, SW, OW, P, uk->isa == ACN_ISA_AVX512, koff};
        acn_gemm_plan plan = {
            .uk = uk, .pa = packed + g * per_group, .M = OCg, .N = N * P, .K = Kg,
            .pack_b = pack_b_im2col, .b_ctx = &ctx,
            .C = out + (size_t)g * OCg * P, .ldc = P, .seg_cols = P, .seg_stride = (ptrdiff_t)OC * P,
            .bias = bias ? bias + (size_t)g * OCg : NULL, .bias_mode = ACN_BIAS_ROW, .relu = relu};
        int st = acn_gemm_parallel(&plan, nt);
        if (st != ACN_OK)
            return st;
    }
    return ACN_OK;
}

int conv2d_forward_cpu(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int C, int H, int W, int OC, int KH, int KW,
                       int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, float *work)
{
    (void)work;
    if (groups < 1 || C % groups || OC % groups || SH < 1 || SW < 1 || DH < 1 || DW < 1)
        return ACN_EINVAL;
    if (N <= 0 || OC <= 0)
        return ACN_OK;
    /* The op-by-op path packs the weights and pads the input per call, in memory
     * freed on return: a one-off huge call must not stay resident in a
     * per-thread buffer. (The network packs once and pads inside its arena.) */
    const acn_ukernel *uk = acn_active_ukernel();
    const int OH = (int)acn_out_size(H, KH, SH, PH, DH), OW = (int)acn_out_size(W, KW, SW, PW, DW);
    if (C > 0 && DH == 1 && DW == 1 && acn_wino_applies(KH, KW, SH, SW, groups, N, OH, OW, uk)) {
        float *u = malloc(acn_wino_packed_floats(C, OC, KH, uk->MR) * sizeof(float));
        int st = u != NULL && acn_wino_pack_weights(u, weight, C, OC, KH, uk->MR) == 1
            ? acn_wino_conv(out, inp, u, uk, bias, N, C, H, W, OC, KH, PH, PW, relu) : ACN_WINO_NONFINITE;
        free(u);
        if (st != ACN_WINO_NONFINITE)
            return st;
    }
    float *packed = malloc((acn_conv_packed_floats(C, OC, KH, KW, groups, uk->MR) + 1) * sizeof(float));
    float *padded = needs_padded_copy(SW, PH, PW)
        ? malloc(acn_conv_phase_floats(N, C, H, W, SW, PH, PW) * sizeof(float)) : NULL;
    int st = ACN_ENOMEM;
    if (packed != NULL && (padded != NULL || !needs_padded_copy(SW, PH, PW))) {
        acn_conv_pack_weights(packed, weight, C, OC, KH, KW, groups, uk->MR);
        st = acn_conv2d_packed(out, inp, packed, uk, bias, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, DH, DW,
                               groups, relu, padded);
    }
    free(padded);
    free(packed);
    return st;
}

int conv2d_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int C, int H, int W, int OC, int KH, int KW,
                         int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, float *work)
{
    (void)work;
    if (groups < 1 || C % groups || OC % groups || SH < 1 || SW < 1 || DH < 1 || DW < 1)
        return ACN_EINVAL;
    const int OH = (int)acn_out_size(H, KH, SH, PH, DH), OW = (int)acn_out_size(W, KW, SW, PW, DW);
    const int Cg = C / groups, OCg = OC / groups;
    const int nt = acn_get_num_threads();
#pragma omp parallel for collapse(2) num_threads(nt) if (nt > 1)
    for (int n = 0; n < N; n++) {
        for (int oc = 0; oc < OC; oc++) {
            const int g = oc / OCg;
            for (int oh = 0; oh < OH; oh++) {
                for (int ow = 0; ow < OW; ow++) {
                    double acc = bias ? bias[oc] : 0.0;
                    for (int c = 0; c < Cg; c++) {
                        for (int kh = 0; kh < KH; kh++) {
                            const int ih = oh * SH - PH + kh * DH;
                            for (int kw = 0; kw < KW; kw++) {
                                const int iw = ow * SW - PW + kw * DW;
                                /* A padding tap still multiplies its weight: 0 * NaN or
                                 * 0 * Inf must give NaN, as in PyTorch. */
                                const float v = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                    ? inp[(((size_t)n * C + g * Cg + c) * H + ih) * W + iw] : 0.0f;
                                acc += (double)v * weight[(((size_t)oc * Cg + c) * KH + kh) * KW + kw];
                            }
                        }
                    }
                    const float v = (float)acc;
                    out[(((size_t)n * OC + oc) * OH + oh) * OW + ow] = relu ? acn_relu1(v) : v;
                }
            }
        }
    }
    return ACN_OK;
}
