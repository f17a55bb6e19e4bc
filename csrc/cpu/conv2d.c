/* Convolution as an implicit GEMM: out(OC, OH*OW) = weight(OC, C*KH*KW) x col,
 * where col is never materialised: the GEMM's B-packing reads the image
 * directly (pack_b_im2col), so no im2col buffer of K x OH*OW floats exists. */
#include "cpu_internal.h"

#include <omp.h>

typedef struct {
    const float *img;   /* (C,H,W) of one image, already offset to the group */
    int H, W, KH, KW, SH, SW, PH, PW, OW;
} im2col_ctx;

/* Row k of col is (c, kh, kw); column j is (oh, ow). */
static void pack_b_im2col(float *dst, const void *vctx, int p0, int kc, int j0, int ncols, int NR)
{
    const im2col_ctx *x = vctx;
    const int khw = x->KH * x->KW;
    for (int panel = 0; panel * NR < ncols; panel++) {
        const int jbase = j0 + panel * NR;
        const int jn = ncols - panel * NR < NR ? ncols - panel * NR : NR;
        float *d = dst + (size_t)panel * kc * NR;
        for (int k = 0; k < kc; k++) {
            const int kk = p0 + k;
            const int c = kk / khw, kh = (kk % khw) / x->KW, kw = kk % x->KW;
            const float *plane = x->img + (size_t)c * x->H * x->W;
            float *dk = d + (size_t)k * NR;
            int oh = jbase / x->OW, ow = jbase % x->OW;
            for (int j = 0; j < jn; j++) {
                const int ih = oh * x->SH - x->PH + kh, iw = ow * x->SW - x->PW + kw;
                dk[j] = (ih >= 0 && ih < x->H && iw >= 0 && iw < x->W) ? plane[(size_t)ih * x->W + iw] : 0.0f;
                if (++ow == x->OW) { ow = 0; oh++; }
            }
            for (int j = jn; j < NR; j++)
                dk[j] = 0.0f;
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

int conv2d_forward_cpu(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int C, int H, int W, int OC, int KH, int KW,
                       int SH, int SW, int PH, int PW, int groups, int relu, float *work)
{
    (void)work;
    if (groups < 1 || C % groups || OC % groups || SH < 1 || SW < 1)
        return ACN_EINVAL;
    const int OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;
    const int Cg = C / groups, OCg = OC / groups, Kg = Cg * KH * KW, P = OH * OW;
    for (int n = 0; n < N; n++) {
        for (int g = 0; g < groups; g++) {
            im2col_ctx ctx = {inp + ((size_t)n * C + (size_t)g * Cg) * H * W,
                              H, W, KH, KW, SH, SW, PH, PW, OW};
            acn_gemm_args a = {
                .A = weight + (size_t)g * OCg * Kg, .rsa = Kg, .csa = 1,
                .pack_b = pack_b_im2col, .b_ctx = &ctx,
                .C = out + ((size_t)n * OC + (size_t)g * OCg) * P, .ldc = P,
                .M = OCg, .N = P, .K = Kg,
                .bias = bias ? bias + (size_t)g * OCg : NULL, .bias_mode = ACN_BIAS_ROW, .relu = relu};
            int st = acn_sgemm(&a);
            if (st != ACN_OK)
                return st;
        }
    }
    return ACN_OK;
}

int conv2d_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int C, int H, int W, int OC, int KH, int KW,
                         int SH, int SW, int PH, int PW, int groups, int relu, float *work)
{
    (void)work;
    if (groups < 1 || C % groups || OC % groups || SH < 1 || SW < 1)
        return ACN_EINVAL;
    const int OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;
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
                            const int ih = oh * SH - PH + kh;
                            if (ih < 0 || ih >= H) continue;
                            for (int kw = 0; kw < KW; kw++) {
                                const int iw = ow * SW - PW + kw;
                                if (iw < 0 || iw >= W) continue;
                                acc += (double)inp[(((size_t)n * C + g * Cg + c) * H + ih) * W + iw]
                                     * weight[(((size_t)oc * Cg + c) * KH + kh) * KW + kw];
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
