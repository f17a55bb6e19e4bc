/* Measurements of this machine for the benchmark's "% of peak" columns:
 * the fp32 FMA peak (a loop of independent FMAs on the active ISA) and the
 * memory read bandwidth (a streaming sum). Exported with default visibility so
 * alexnet_c.bench can reach them through ctypes until module.c exposes them. */
#include "cpu_internal.h"

#include <omp.h>
#include <time.h>

double acn_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if ACN_X86
#include <immintrin.h>
/* Independent accumulators in named registers (an array would live on the
 * stack): enough of them to cover 4-cycle FMA latency x 2 FMA ports. */
#define ACN_FMA8(T, F, A0, A1, A2, A3, A4, A5, A6, A7)                               \
    A0 = F(A0, m, a); A1 = F(A1, m, a); A2 = F(A2, m, a); A3 = F(A3, m, a);          \
    A4 = F(A4, m, a); A5 = F(A5, m, a); A6 = F(A6, m, a); A7 = F(A7, m, a)

__attribute__((target("avx512f,fma")))
static double fma_loop_avx512(long iters)
{
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    __m512 x0 = _mm512_set1_ps(1.00f), x1 = _mm512_set1_ps(1.01f), x2 = _mm512_set1_ps(1.02f), x3 = _mm512_set1_ps(1.03f), x4 = _mm512_set1_ps(1.04f), x5 = _mm512_set1_ps(1.05f), x6 = _mm512_set1_ps(1.06f), x7 = _mm512_set1_ps(1.07f);
    __m512 y0 = _mm512_set1_ps(1.08f), y1 = _mm512_set1_ps(1.09f), y2 = _mm512_set1_ps(1.10f), y3 = _mm512_set1_ps(1.11f), y4 = _mm512_set1_ps(1.12f), y5 = _mm512_set1_ps(1.13f), y6 = _mm512_set1_ps(1.14f), y7 = _mm512_set1_ps(1.15f);
    __m512 z0 = _mm512_set1_ps(1.16f), z1 = _mm512_set1_ps(1.17f), z2 = _mm512_set1_ps(1.18f), z3 = _mm512_set1_ps(1.19f), z4 = _mm512_set1_ps(1.20f), z5 = _mm512_set1_ps(1.21f), z6 = _mm512_set1_ps(1.22f), z7 = _mm512_set1_ps(1.23f);
    for (long it = 0; it < iters; it++) {
        ACN_FMA8(__m512, _mm512_fmadd_ps, x0, x1, x2, x3, x4, x5, x6, x7);
        ACN_FMA8(__m512, _mm512_fmadd_ps, y0, y1, y2, y3, y4, y5, y6, y7);
        ACN_FMA8(__m512, _mm512_fmadd_ps, z0, z1, z2, z3, z4, z5, z6, z7);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                             _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(y0, y1), _mm512_add_ps(y2, y3)),
                                       _mm512_add_ps(_mm512_add_ps(y4, y5), _mm512_add_ps(y6, y7))));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(z0, z1), _mm512_add_ps(z2, z3)),
                                       _mm512_add_ps(_mm512_add_ps(z4, z5), _mm512_add_ps(z6, z7))));
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * 24 * 16 * 2;
}

__attribute__((target("avx2,fma")))
static double fma_loop_avx2(long iters)
{
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    __m256 x0 = _mm256_set1_ps(1.00f), x1 = _mm256_set1_ps(1.01f), x2 = _mm256_set1_ps(1.02f), x3 = _mm256_set1_ps(1.03f), x4 = _mm256_set1_ps(1.04f), x5 = _mm256_set1_ps(1.05f), x6 = _mm256_set1_ps(1.06f), x7 = _mm256_set1_ps(1.07f);
    __m256 y0 = _mm256_set1_ps(1.08f), y1 = _mm256_set1_ps(1.09f), y2 = _mm256_set1_ps(1.10f), y3 = _mm256_set1_ps(1.11f), y4 = _mm256_set1_ps(1.12f), y5 = _mm256_set1_ps(1.13f), y6 = _mm256_set1_ps(1.14f), y7 = _mm256_set1_ps(1.15f);
    for (long it = 0; it < iters; it++) {
        ACN_FMA8(__m256, _mm256_fmadd_ps, x0, x1, x2, x3, x4, x5, x6, x7);
        ACN_FMA8(__m256, _mm256_fmadd_ps, y0, y1, y2, y3, y4, y5, y6, y7);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(y0, y1), _mm256_add_ps(y2, y3)),
                                       _mm256_add_ps(_mm256_add_ps(y4, y5), _mm256_add_ps(y6, y7))));
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    volatile float sink = lanes[0] + lanes[7];
    (void)sink;
    return (double)iters * 16 * 8 * 2;
}
#endif

static double fma_loop_generic(long iters)
{
    float acc[32];
    for (int i = 0; i < 32; i++)
        acc[i] = (float)i * 1e-3f;
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 32
        for (int i = 0; i < 32; i++)
            acc[i] = acc[i] * 0.999999f + 1e-7f;
    float s = 0.0f;
    for (int i = 0; i < 32; i++)
        s += acc[i];
    volatile float sink = s;
    (void)sink;
    return (double)iters * 32 * 2;
}

static double fma_loop(acn_isa isa, long iters)
{
#if ACN_X86
    if (isa == ACN_ISA_AVX512) return fma_loop_avx512(iters);
    if (isa == ACN_ISA_AVX2) return fma_loop_avx2(iters);
#endif
    (void)isa;
    return fma_loop_generic(iters);
}

/* The probes take their thread count from the caller, but a forked child has no
 * OpenMP pool left to run more than one (threads.c): there they run on one. */
static int probe_threads(int nt)
{
    if (acn_in_forked_child()) return 1;
    return nt < 1 ? acn_get_num_threads() : nt;
}

/* fp32 GFLOP/s of nt threads running FMAs for about `seconds`: the best of 5
 * repetitions, each timed as the slowest thread's. */
double acn_measure_fma_peak(int nt, double seconds)
{
    nt = probe_threads(nt);
    const acn_isa isa = acn_active_isa();
    long iters = 1000;
    for (;;) {   /* calibrate on one thread */
        double t0 = acn_now_seconds();
        fma_loop(isa, iters);
        double dt = acn_now_seconds() - t0;
        if (dt > 0.01 || iters > (1L << 40)) {
            iters = (long)((double)iters * (seconds / 5.0) / (dt > 0 ? dt : 1e-9)) + 1;
            break;
        }
        iters *= 4;
    }
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double flops = 0.0, t0 = acn_now_seconds();
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : flops)
        flops += fma_loop(isa, iters);
        double gf = flops / (acn_now_seconds() - t0) / 1e9;
        if (gf > best) best = gf;
    }
    return best;
}

/* GB/s of nt threads summing buf[0..n) (each its own contiguous share), best of reps. */
double acn_measure_read_bw(const float *buf, size_t n, int reps, int nt)
{
    nt = probe_threads(nt);
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int rep = 0; rep < reps; rep++) {
        float total = 0.0f;
        double t0 = acn_now_seconds();
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : total)
        {
            const int t = omp_get_thread_num(), nth = omp_get_num_threads();
            const size_t i0 = n * t / nth, i1 = n * (t + 1) / nth;
            /* STREAMS sequential streams per thread, read side by side: one
             * stream alone is bound by the latency of the prefetchers, not by
             * the memory (measured 16 vs 25 GB/s on 2 cores), and the weight
             * kernels read many rows at once. Each stream is prefetched into
             * L2 2 KB ahead, as the FC kernel's streams are: without it the
             * hardware prefetchers alone gave 30 GB/s where the memory gives
             * 49 (2 threads, Zen 4), and the FC layers ran "faster than the
             * memory". */
            enum { STREAMS = 8, AHEAD = 512 };
            const size_t len = (i1 - i0) / STREAMS / 16 * 16;
            float acc[STREAMS][16] = {{0}};
            for (size_t i = 0; i < len; i += 16)
                for (int s = 0; s < STREAMS; s++) {
                    const float *p = buf + i0 + s * len + i;
                    if (i + AHEAD < len)
                        __builtin_prefetch(p + AHEAD, 0, 2);
                    for (int l = 0; l < 16; l++)
                        acc[s][l] += p[l];
                }
            for (size_t i = i0 + STREAMS * len; i < i1; i++)
                acc[0][0] += buf[i];
            for (int s = 0; s < STREAMS; s++)
                for (int l = 0; l < 16; l++)
                    total += acc[s][l];
        }
        double gbs = (double)n * sizeof(float) / (acn_now_seconds() - t0) / 1e9;
        sink = total;
        if (gbs > best) best = gbs;
    }
    (void)sink;
    return best;
}
