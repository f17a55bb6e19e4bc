/* Fully-connected layers. At small batch they are bound by reading the weight
 * matrix (151 MB for AlexNet's fc1): the streaming kernel reads each weight row
 * once for every input row of the batch. At larger batch the packed GEMM wins,
 * and it still reads the weights once per call (B blocks are shared by all rows). */
#include "cpu_internal.h"

#include <omp.h>

enum { STREAM_MAX_ROWS = 8, LANES = 16 };

static float dot_lanes(const float *w, const float *x, int In)
{
    /* LANES independent partial sums: vectorisable without reassociating. */
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= In; i += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += w[i + l] * x[i + l];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    for (; i < In; i++)
        s += w[i] * x[i];
    return s;
}

static void linear_stream(float *out, const float *inp, const float *weight, const float *bias,
                          int N, int In, int Out, int relu)
{
    const int nt = acn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int o = 0; o < Out; o++) {
        const float *w = weight + (size_t)o * In;
        for (int n = 0; n < N; n++) {
            float v = dot_lanes(w, inp + (size_t)n * In, In) + (bias ? bias[o] : 0.0f);
            out[(size_t)n * Out + o] = relu ? acn_relu1(v) : v;
        }
    }
}

int linear_forward_cpu(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int In, int Out, int relu)
{
    if (N <= 0 || Out <= 0)
        return ACN_OK;
    if (N <= STREAM_MAX_ROWS) {
        linear_stream(out, inp, weight, bias, N, In, Out, relu);
        return ACN_OK;
    }
    /* out(N,Out) = inp(N,In) x weight^T: B(k=i, j=o) = weight[o*In + i]. */
    return sgemm_cpu(out, Out, inp, In, 1, weight, 1, In, N, Out, In, bias, ACN_BIAS_COL, relu);
}

int linear_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int In, int Out, int relu)
{
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < Out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < In; i++)
                acc += (double)inp[(size_t)n * In + i] * weight[(size_t)o * In + i];
            const float v = (float)acc;
            out[(size_t)n * Out + o] = relu ? acn_relu1(v) : v;
        }
    }
    return ACN_OK;
}
