/* Max and adaptive-average pooling, one (n, c) plane per iteration. */
#include "cpu_internal.h"

#include <math.h>
#include <omp.h>

/* max that propagates NaN as PyTorch does; branch-free so loops vectorise. */
static inline float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

enum { POOL_MAX_W = 1024, POOL_PAD = 48 };

/* One output row of AlexNet's pool (3x3, stride 2, every window inside the
 * plane): the vertical max of three rows, then the max over three columns with
 * stride 2. colmax holds POOL_MAX_W + POOL_PAD floats. */
static void pool_row_plain(float *o, const float *r0, const float *r1, const float *r2, int OW, float *colmax)
{
    const int wn = 2 * OW + 1;
    for (int w = 0; w < wn; w++)
        colmax[w] = nan_max(nan_max(r0[w], r1[w]), r2[w]);
    for (int ow = 0; ow < OW; ow++)
        o[ow] = nan_max(nan_max(colmax[2 * ow], colmax[2 * ow + 1]), colmax[2 * ow + 2]);
}

#if ACN_X86
#include <immintrin.h>

/* nan_max on 16 lanes, the same operand order, so results are bit-identical. */
__attribute__((target("avx512f")))
static inline __m512 nan_max16(__m512 a, __m512 b)
{
    const __mmask16 take_a = _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(take_a, b, a);
}

/* The stride-2 step takes even and odd lanes of 32 column maxima with two
 * permutes (and the even lanes again from two columns on): the compiler's
 * version of the plain loop ran at half the memory bandwidth (pool1 8 ms at
 * batch 64 for 62 MB moved). */
__attribute__((target("avx512f")))
static void pool_row_avx512(float *o, const float *r0, const float *r1, const float *r2, int OW, float *colmax)
{
    const int wn = 2 * OW + 1;
    for (int w = 0; w < wn; w += 16) {
        const __mmask16 m = acn_lanes_left((size_t)(wn - w));
        const __m512 v = nan_max16(nan_max16(_mm512_maskz_loadu_ps(m, r0 + w), _mm512_maskz_loadu_ps(m, r1 + w)),
                                   _mm512_maskz_loadu_ps(m, r2 + w));
        _mm512_storeu_ps(colmax + w, v);   /* lanes past wn land in POOL_PAD and are never output */
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int ow = 0; ow < OW; ow += 16) {
        const __mmask16 m = acn_lanes_left((size_t)(OW - ow));
        const float *c = colmax + 2 * ow;
        const __m512 lo = _mm512_loadu_ps(c), hi = _mm512_loadu_ps(c + 16);
        const __m512 lo2 = _mm512_loadu_ps(c + 2), hi2 = _mm512_loadu_ps(c + 18);
        const __m512 x0 = _mm512_permutex2var_ps(lo, even, hi), x1 = _mm512_permutex2var_ps(lo, odd, hi);
        const __m512 x2 = _mm512_permutex2var_ps(lo2, even, hi2);
        _mm512_mask_storeu_ps(o + ow, m, nan_max16(nan_max16(x0, x1), x2));
    }
}
#endif

static void max_pool_3x3s2(float *out, const float *inp, int NC, int H, int W, int OH, int OW)
{
    const int nt = acn_get_num_threads();
    void (*row)(float *, const float *, const float *, const float *, int, float *) = pool_row_plain;
#if ACN_X86
    if (acn_active_isa() == ACN_ISA_AVX512)
        row = pool_row_avx512;
#endif
#pragma omp parallel num_threads(nt) if (nt > 1 && NC > 1)
    {
        /* zeroed: the vector path reads (never outputs) up to POOL_PAD past a row */
        float colmax[POOL_MAX_W + POOL_PAD] = {0};
#pragma omp for schedule(static)
        for (int p = 0; p < NC; p++) {
            const float *plane = inp + (size_t)p * H * W;
            float *o = out + (size_t)p * OH * OW;
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = plane + (size_t)(2 * oh) * W;
                row(o + (size_t)oh * OW, r0, r0 + W, r0 + 2 * W, OW, colmax);
            }
        }
    }
}

/* Every other case: kernel, stride, padding and dilation of any size, and the
 * indices. The loops follow PyTorch's CPU kernel, so that ties and NaN pick the
 * same index: the first tap inside the plane to start, then any greater value or
 * any NaN. */
int max_pool2d_forward_cpu(float *out, int64_t *indices, const float *inp, int NC, int H, int W,
                           int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                           int OH, int OW)
{
    if (KH < 1 || KW < 1 || SH < 1 || SW < 1 || PH < 0 || PW < 0 || DH < 1 || DW < 1)
        return ACN_EINVAL;
    if (indices == NULL && KH == 3 && KW == 3 && SH == 2 && SW == 2 && PH == 0 && PW == 0 && DH == 1 && DW == 1
        && OH > 0 && OW > 0 && 2 * OH + 1 <= H && 2 * OW + 1 <= W && W <= POOL_MAX_W) {
        max_pool_3x3s2(out, inp, NC, H, W, OH, OW);
        return ACN_OK;
    }
    const int nt = acn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && NC > 1)
    for (int p = 0; p < NC; p++) {
        const float *plane = inp + (size_t)p * H * W;
        const size_t o0 = (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int hs = oh * SH - PH;
            const long long he_ll = (long long)hs + (long long)(KH - 1) * DH + 1;
            const int he = he_ll > H ? H : (int)he_ll;
            while (hs < 0)
                hs += DH;
            for (int ow = 0; ow < OW; ow++) {
                int ws = ow * SW - PW;
                const long long we_ll = (long long)ws + (long long)(KW - 1) * DW + 1;
                const int we = we_ll > W ? W : (int)we_ll;
                while (ws < 0)
                    ws += DW;
                float m = -INFINITY;
                int64_t at = (int64_t)hs * W + ws;
                /* 64-bit steps: h + DH may pass INT_MAX after the last tap */
                for (long long h = hs; h < he; h += DH)
                    for (long long w = ws; w < we; w += DW) {
                        const float v = plane[(size_t)h * W + w];
                        if (v > m || isnan(v)) {   /* as PyTorch: NaN wins */
                            m = v;
                            at = (int64_t)h * W + w;
                        }
                    }
                out[o0 + (size_t)oh * OW + ow] = m;
                if (indices)
                    indices[o0 + (size_t)oh * OW + ow] = at;
            }
        }
    }
    return ACN_OK;
}

int adaptive_avg_pool2d_forward_cpu(float *out, const float *inp, int NC, int H, int W,
                                    int OH, int OW)
{
    const int nt = acn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && NC > 1)
    for (int p = 0; p < NC; p++) {
        const float *plane = inp + (size_t)p * H * W;
        float *o = out + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            const int hs = (int)(((long long)oh * H) / OH);
            const int he = (int)(((long long)(oh + 1) * H + OH - 1) / OH);
            for (int ow = 0; ow < OW; ow++) {
                const int ws = (int)(((long long)ow * W) / OW);
                const int we = (int)(((long long)(ow + 1) * W + OW - 1) / OW);
                /* In double: a float32 sum loses the mean to cancellation (values of 1e9
                 * averaging 1e5) and overflows to Inf for means below FLT_MAX; the
                 * float64 reference does neither, and the window is read once anyway. */
                double s = 0.0;
                for (int h = hs; h < he; h++)
                    for (int w = ws; w < we; w++)
                        s += plane[(size_t)h * W + w];
                o[(size_t)oh * OW + ow] = (float)(s / ((double)(he - hs) * (we - ws)));
            }
        }
    }
    return ACN_OK;
}
