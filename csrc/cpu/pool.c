/* Max and adaptive-average pooling, one (n, c) plane per iteration. */
#include "cpu_internal.h"

#include <math.h>
#include <omp.h>

int max_pool2d_forward_cpu(float *out, const float *inp, int NC, int H, int W,
                           int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
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
