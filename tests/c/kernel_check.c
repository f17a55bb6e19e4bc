/* The CPU kernels against their plain references, in C alone: no Python, no
 * NumPy, no torch. Run natively by tests/test_kernel_check.py for every ISA
 * this CPU has, and cross-compiled for other architectures (aarch64 under
 * qemu, see benchmarks/portable_check.sh), where only the portable kernels
 * exist. Prints one line per failure and exits 1, or "kernel_check: OK ...". */
#include "alexnet_c.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float uniform(void)   /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

static float *random_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; p && i < n; i++)
        p[i] = uniform();
    return p;
}

static int failures, checks;

/* DESIGN.md's rule: max|ours - ref| <= 1e-4 * max|ref|. */
static void compare(const char *what, const float *ours, const float *ref, size_t n)
{
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)ours[i] - (double)ref[i]);
        if (!(d <= err)) err = d;   /* NaN counts as an error */
        if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
    }
    checks++;
    if (!(err <= 1e-4 * scale)) {
        failures++;
        printf("FAIL %s: max err %.3g, scale %.3g\n", what, err, scale);
    }
}

static void verdict(const char *what, int status, const float *ours, const float *ref, size_t n)
{
    if (status != ACN_OK) {
        checks++;
        failures++;
        printf("FAIL %s: status %d\n", what, status);
    } else {
        compare(what, ours, ref, n);
    }
}

static void check_conv(const char *isa, int threads, const int c[10])
{
    const int N = c[0], C = c[1], H = c[2], W = c[3], OC = c[4], K = c[5], S = c[6], P = c[7], G = c[8];
    const int D = c[9] ? c[9] : 1;
    const int OH = (H + 2 * P - D * (K - 1) - 1) / S + 1, OW = (W + 2 * P - D * (K - 1) - 1) / S + 1;
    const size_t on = (size_t)N * OC * OH * OW;
    float *x = random_floats((size_t)N * C * H * W), *w = random_floats((size_t)OC * (C / G) * K * K);
    float *b = random_floats((size_t)OC), *ours = malloc(on * sizeof(float)), *ref = malloc(on * sizeof(float));
    char what[160];
    for (int relu = 0; relu <= 1; relu++) {
        snprintf(what, sizeof what, "conv2d %s %dt N%d C%d %dx%d OC%d k%d s%d p%d d%d g%d relu%d winograd %s", isa,
                 threads, N, C, H, W, OC, K, S, P, D, G, relu, acn_wino_mode_name(acn_get_winograd()));
        int st = conv2d_forward_cpu(ours, x, w, relu ? b : NULL, N, C, H, W, OC, K, K, S, S, P, P, D, D, G, relu,
                                    NULL);
        conv2d_forward_naive(ref, x, w, relu ? b : NULL, N, C, H, W, OC, K, K, S, S, P, P, D, D, G, relu, NULL);
        verdict(what, st, ours, ref, on);
    }
    free(x); free(w); free(b); free(ours); free(ref);
}

static void check_linear(const char *isa, int threads, int N, int In, int Out)
{
    const size_t on = (size_t)N * Out;
    float *x = random_floats((size_t)N * In), *w = random_floats((size_t)Out * In), *b = random_floats((size_t)Out);
    float *ours = malloc((on ? on : 1) * sizeof(float)), *ref = malloc((on ? on : 1) * sizeof(float));
    char what[120];
    snprintf(what, sizeof what, "linear %s %dt N%d In%d Out%d", isa, threads, N, In, Out);
    int st = linear_forward_cpu(ours, x, w, b, N, In, Out, 1);
    linear_forward_naive(ref, x, w, b, N, In, Out, 1);
    verdict(what, st, ours, ref, on);
    free(x); free(w); free(b); free(ours); free(ref);
}

int main(void)
{
    static const int convs[][10] = {   /* N C H W OC K S P G, dilation (0: 1) */
        {1, 3, 35, 35, 64, 11, 4, 2, 1},   /* conv1-like, phase-split input */
        {2, 3, 31, 31, 96, 11, 4, 0, 1},
        {1, 64, 15, 15, 192, 5, 1, 2, 1},  /* K = 1600 */
        {3, 24, 13, 13, 40, 3, 1, 1, 1},   /* tiles straddle images */
        {2, 260, 7, 7, 17, 3, 1, 1, 1},    /* K = 2340: two depth blocks */
        {2, 8, 10, 11, 20, 3, 2, 1, 2},    /* groups, stride 2 */
        {1, 5, 9, 7, 7, 3, 1, 0, 1},
        {1, 2, 3, 3, 5, 1, 5, 0, 1},       /* stride above the width */
        {64, 16, 6, 6, 12, 3, 1, 1, 1},
        {2, 7, 10, 11, 17, 5, 1, 2, 1},    /* 5x5, odd output: Winograd blocks past the kernel */
        {2, 6, 19, 17, 10, 3, 1, 2, 1, 2}, /* dilated: no Winograd, taps two rows apart */
        {1, 3, 35, 33, 8, 5, 3, 4, 1, 2},  /* dilated and phase-split: tap kw reads phase 2*kw % 3 */
    };
    static const int linears[][3] = {{1, 9216, 37}, {3, 100, 7}, {8, 2051, 66}, {9, 1030, 101},
                                     {16, 4099, 97}, {64, 1500, 130}, {17, 0, 5}, {12, 31, 1}};
    static const acn_isa isas[] = {ACN_ISA_GENERIC, ACN_ISA_AVX2, ACN_ISA_AVX512};
    const acn_isa best = acn_best_isa();
    int isas_run = 0;
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (isas[i] > best || acn_set_isa(isas[i]) != ACN_OK)
            continue;
        isas_run++;
        for (int threads = 1; threads <= 2; threads++) {
            acn_set_num_threads(threads);
            /* off: the direct path everywhere; on: Winograd for every 3x3 / 5x5 stride-1 case */
            for (int mode = ACN_WINO_OFF; mode <= ACN_WINO_ON; mode++) {
                acn_set_winograd((acn_wino_mode)mode);
                for (size_t c = 0; c < sizeof convs / sizeof convs[0]; c++)
                    check_conv(acn_isa_name(isas[i]), threads, convs[c]);
            }
            acn_set_winograd(ACN_WINO_AUTO);
            for (size_t l = 0; l < sizeof linears / sizeof linears[0]; l++)
                check_linear(acn_isa_name(isas[i]), threads, linears[l][0], linears[l][1], linears[l][2]);
        }
    }
    if (failures) {
        printf("kernel_check: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("kernel_check: OK, %d checks, %d ISA path(s), best %s\n", checks, isas_run, acn_isa_name(best));
    return 0;
}
