/* ReLU and (log-)softmax. */
#include "cpu_internal.h"

#include <math.h>
#include <omp.h>

int relu_forward_cpu(float *out, const float *inp, size_t n)
{
    const int nt = acn_get_num_threads();
    const long long count = (long long)n;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && count > 65536)
    for (long long i = 0; i < count; i++)
        out[i] = acn_relu1(inp[i]);
    return ACN_OK;
}

/* One reduction row: D values spaced `inner` apart. The maximum is subtracted
 * first so that inputs of 1e4 do not overflow expf; NaN anywhere makes the
 * whole row NaN, as in PyTorch. */
static void softmax_row(float *out, const float *inp, size_t D, size_t inner, int log_form)
{
    float m = -INFINITY;
    for (size_t d = 0; d < D; d++) {
        const float v = inp[d * inner];
        if (v > m || isnan(v))
            m = v;
    }
    double sum = 0.0;
    for (size_t d = 0; d < D; d++)
        sum += exp((double)inp[d * inner] - (double)m);
    if (log_form) {
        const double lse = log(sum);
        for (size_t d = 0; d < D; d++)
            out[d * inner] = (float)((double)inp[d * inner] - (double)m - lse);
    } else {
        for (size_t d = 0; d < D; d++)
            out[d * inner] = (float)(exp((double)inp[d * inner] - (double)m) / sum);
    }
}

static int softmax_any(float *out, const float *inp, size_t outer, size_t D, size_t inner, int log_form)
{
    const long long rows = (long long)(outer * inner);
    const int nt = acn_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows > 1 && D * rows > 16384)
    for (long long r = 0; r < rows; r++) {
        const size_t o = (size_t)r / inner, i = (size_t)r % inner;
        const size_t base = o * D * inner + i;
        softmax_row(out + base, inp + base, D, inner, log_form);
    }
    return ACN_OK;
}

int softmax_forward_cpu(float *out, const float *inp, size_t outer, size_t D, size_t inner)
{
    return softmax_any(out, inp, outer, D, inner, 0);
}

int log_softmax_forward_cpu(float *out, const float *inp, size_t outer, size_t D, size_t inner)
{
    return softmax_any(out, inp, outer, D, inner, 1);
}
