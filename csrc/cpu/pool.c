/* Max and adaptive-average pooling, one (n, c) plane per iteration. */
#include "cpu_internal.h"

#include <math.h>
#include <omp.h>

/* max that propagates NaN as PyTorch does; branch-free so loops vectorise. */
static inline float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

/* AlexNet's pool (3x3, stride 2, no padding, every window inside the plane):
 * a vertical max of three rows (contiguous, vectorised), then the horizontal
 * max over three columns with stride 2. */
static void max_pool_3x3s2(float *out, const float *inp, int NC, int H, int W, int OH, int OW)
{
    const int nt = acn_get_num_threads();
#pragma omp parallel num_threads(nt) if (nt > 1 && NC > 1)
    {
        float colmax[1024];
#pragma omp for schedule(static)
        for (int p = 0; p < NC; p++) {
            const float *plane = inp + (size_t)p * H * W;
            float *o = out + (size_t)p * OH * OW;
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = plane + (size_t)(2 * oh) * W, *r1 = r0 + W, *r2 = r1 + W;
                const int wn = 2 * OW + 1;
                for (int w = 0; w < wn; w++)
                    colmax[w] = nan_max(nan_max(r0[w], r1[w]), r2[w]);
                float *ow_ = o + (size_t)oh * OW;
                for (int ow = 0; ow < OW; ow++)
                    ow_[ow] = nan_max(nan_max(colmax[2 * ow], colmax[2 * ow + 1]), colmax[2 * ow + 2]);
            }
        }
    }
}

int max_pool2d_forward_cpu(float *out, const float *inp, int NC, int H, int W,
                           int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    if (KH == 3 && KW == 3 && SH == 2 && SW == 2 && PH == 0 && PW == 0 && OH > 0 && OW > 0
        && 2 * OH + 1 <= H && 2 * OW + 1 <= W && W <= 1024) {
        max_pool_3x3s2(out, inp, NC, H, W, OH, OW);
        return ACN_OK;
    }
    const int nt = acn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && NC > 1)
    for (int p = 0; p < NC; p++) {
        const float *plane = inp + (size_t)p * H * W;
        float *o = out + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            const int h0 = oh * SH - PH;
            const int hs = h0 < 0 ? 0 : h0, he = h0 + KH > H ? H : h0 + KH;
            for (int ow = 0; ow < OW; ow++) {
                const int w0 = ow * SW - PW;
                const int ws = w0 < 0 ? 0 : w0, we = w0 + KW > W ? W : w0 + KW;
                float m = -INFINITY;
                for (int h = hs; h < he; h++)
                    for (int w = ws; w < we; w++) {
                        const float v = plane[(size_t)h * W + w];
                        if (v > m || isnan(v))   /* as PyTorch: NaN wins */
                            m = v;
                    }
                o[(size_t)oh * OW + ow] = m;
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
                float s = 0.0f;
                for (int h = hs; h < he; h++)
                    for (int w = ws; w < we; w++)
                        s += plane[(size_t)h * W + w];
                o[(size_t)oh * OW + ow] = s / (float)((he - hs) * (we - ws));
            }
        }
    }
    return ACN_OK;
}
