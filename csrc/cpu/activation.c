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

#if ACN_X86
#include <immintrin.h>

/* e^t for t <= 0 or NaN (t = x - max): t = n*ln2 + r with |r| <= ln2/2, e^r by its
 * degree-6 Taylor polynomial (relative error < 2e-7), times 2^n by scalef, which
 * rounds to subnormals and to 0 like expf. Below -104 the result is 0; NaN stays
 * NaN (vmaxps returns its second operand when either is NaN). */
__attribute__((target("avx512f")))
static inline __m512 exp_nonpositive(__m512 t)
{
    t = _mm512_max_ps(_mm512_set1_ps(-104.0f), t);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), t);    /* ln2, high bits */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);  /* ln2, the rest */
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* softmax_row for a contiguous row (inner == 1), 16 lanes at a time; the sum is
 * kept in double like the scalar row's. */
__attribute__((target("avx512f")))
static void softmax_row_avx512(float *out, const float *inp, size_t D, int log_form)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    __mmask16 nan = 0;
    for (size_t d = 0; d < D; d += 16) {
        const __mmask16 k = acn_lanes_left(D - d);
        const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, inp + d);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        vmax = _mm512_max_ps(vmax, v);
    }
    const __m512 m = _mm512_set1_ps(nan ? NAN : _mm512_reduce_max_ps(vmax));
    __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
    for (size_t d = 0; d < D; d += 16) {
        const __mmask16 k = acn_lanes_left(D - d);
        const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, inp + d), m)));
        if (!log_form)
            _mm512_mask_storeu_ps(out + d, k, e);
        sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    const double sum = _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));
    if (log_form) {
        const __m512 lse = _mm512_set1_ps((float)log(sum));
        for (size_t d = 0; d < D; d += 16) {
            const __mmask16 k = acn_lanes_left(D - d);
            const __m512 v = _mm512_maskz_loadu_ps(k, inp + d);
            _mm512_mask_storeu_ps(out + d, k, _mm512_sub_ps(_mm512_sub_ps(v, m), lse));
        }
    } else {
        const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
        for (size_t d = 0; d < D; d += 16) {
            const __mmask16 k = acn_lanes_left(D - d);
            _mm512_mask_storeu_ps(out + d, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, out + d), inv));
        }
    }
}
#endif

static int softmax_any(float *out, const float *inp, size_t outer, size_t D, size_t inner, int log_form)
{
    const long long rows = (long long)(outer * inner);
    const int nt = acn_get_num_threads();
#if ACN_X86
    const int vector_rows = inner == 1 && acn_active_isa() == ACN_ISA_AVX512;
#endif
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows > 1 && D * rows > 16384)
    for (long long r = 0; r < rows; r++) {
        const size_t o = (size_t)r / inner, i = (size_t)r % inner;
        const size_t base = o * D * inner + i;
#if ACN_X86
        if (vector_rows) {
            softmax_row_avx512(out + base, inp + base, D, log_form);
            continue;
        }
#endif
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
