/* gemm.cuh: the shared-memory tiled SGEMM behind conv2d.cu (implicit GEMM: B is
 * gathered straight from the input image, no im2col buffer) and linear.cu (large
 * batch: B is the input's rows). Included by those two files only; each instantiates
 * the loader it needs.
 *
 * One GEMM per group g (blockIdx.z):
 *   out[n, g*OCg + m, oh, ow] = sum_k weight[g*OCg + m, k] * B[k, p]  (+ bias, ReLU)
 * M = OCg output channels, N = P = N*OH*OW output pixels p = (n*OH + oh)*OW + ow,
 * K = Cg*KH*KW with k = (c*KH + kh)*KW + kw, the weight's own layout, so a weight row
 * is contiguous in k.
 *   Image loader: B[k, p] = inp[n, g*Cg + c, oh*SH - PH + kh, ow*SW - PW + kw], 0 outside.
 *   Rows loader:  B[k, p] = inp[p*K + k] (linear: pixels are batch rows, OHW = 1).
 *
 * Block: BM x BN outputs, (BM/TM)*(BN/TN) threads, each TM x TN of them in registers.
 * Per BK-deep step the block stages A (BM x BK) and B (BK x BN) in shared memory, both
 * stored k-major so the inner product reads a row of each. Shared memory is double
 * buffered and the next step's global loads are issued before the current step's
 * arithmetic, so the loads' latency hides behind it with a single barrier per step.
 * Where the time goes: in the FMA loop for the big tiles; in the B gather (bounds
 * tests, index arithmetic) for conv1, whose K (363) is short.
 */
#ifndef ALEXNET_C_CUDA_GEMM_CUH
#define ALEXNET_C_CUDA_GEMM_CUH

#include <atomic>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

namespace acn {

struct GemmArgs {
    float *out;
    const float *inp, *weight, *bias;   /* bias (OC) or NULL */
    int C, H, W;                        /* input image per batch item (Image loader) */
    int OC, OHW, OW;                    /* out (N, OC, OHW) */
    int KW, SH, SW, PH, PW;
    int Cg, OCg;                        /* channels per group */
    int K, P;                           /* K = Cg*KH*KW, P = N*OH*OW */
    int relu;
    FastDiv div_khw, div_kw, div_ohw, div_ow;
};

enum class BLoad { Image, Rows };

template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
gemm_tile_kernel(const GemmArgs a) {
    constexpr int NT = (BM / TM) * (BN / TN);
    constexpr int A_PER = BM * BK / NT;       /* A elements each thread stages per step */
    constexpr int B_PER = BN * BK / NT;
    constexpr int A_STEP = NT / BK;           /* A: thread keeps one k, rows A_STEP apart */
    constexpr int B_STEP = LOAD == BLoad::Image ? NT / BN : NT / BK;
    constexpr int COLS = BN / TN;             /* threads across a tile row */
    static_assert(BM * BK % NT == 0 && BN * BK % NT == 0, "tile not divisible among threads");
    static_assert(NT % BK == 0 && NT % BN == 0, "loader mapping needs NT % BK == NT % BN == 0");

    /* +4: rows of a tile land on different banks when stored transposed, and a row
     * start stays 16-byte aligned for the float4 reads of A. */
    __shared__ __align__(16) float As[2][BK][BM + 4];
    __shared__ __align__(16) float Bs[2][BK][BN + 4];

    const int t = threadIdx.x;
    const int g = blockIdx.z;
    const int m0 = blockIdx.y * BM;
    const int p0 = blockIdx.x * BN;
    const int tx = t % COLS, ty = t / COLS;

    /* A loader: one k column of the tile, A_PER rows. */
    const int a_k = t % BK, a_m = t / BK;
    const float *a_rows = a.weight + (size_t)g * a.OCg * a.K;

    /* B loader. Image: one pixel column per thread for the whole K loop, so its
     * (n, oh, ow) decomposition is done once here; k rows B_STEP apart. Rows: like A. */
    const int b_p = LOAD == BLoad::Image ? t % BN : t / BK;
    const int b_k = LOAD == BLoad::Image ? t / BN : t % BK;
    const float *img = a.inp;
    int ih0 = 0, iw0 = 0;
    bool p_ok = false;
    if constexpr (LOAD == BLoad::Image) {
        const int p = p0 + b_p;
        p_ok = p < a.P;
        int n = 0, ohw = 0, oh = 0, ow = 0;
        if (p_ok) {
            a.div_ohw.divmod(p, n, ohw);
            a.div_ow.divmod(ohw, oh, ow);
        }
        ih0 = oh * a.SH - a.PH;
        iw0 = ow * a.SW - a.PW;
        img = a.inp + ((size_t)n * a.C + (size_t)g * a.Cg) * a.H * a.W;
    }

    float a_reg[A_PER], b_reg[B_PER];

    auto load_global = [&](int k0) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
            const int m = m0 + a_m + i * A_STEP, k = k0 + a_k;
            a_reg[i] = (m < a.OCg && k < a.K) ? __ldg(a_rows + (size_t)m * a.K + k) : 0.f;
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            float v = 0.f;
            if constexpr (LOAD == BLoad::Image) {
                const int k = k0 + b_k + i * B_STEP;
                if (p_ok && k < a.K) {
                    int c, r, kh, kw;
                    a.div_khw.divmod(k, c, r);
                    a.div_kw.divmod(r, kh, kw);
                    const int ih = ih0 + kh, iw = iw0 + kw;
                    /* unsigned compare: one test covers < 0 and >= H (zero padding) */
                    if ((unsigned)ih < (unsigned)a.H && (unsigned)iw < (unsigned)a.W)
                        v = __ldg(img + (c * a.H + ih) * a.W + iw);
                }
            } else {
                const int p = p0 + b_p + i * B_STEP, k = k0 + b_k;
                if (p < a.P && k < a.K) v = __ldg(a.inp + (size_t)p * a.K + k);
            }
            b_reg[i] = v;
        }
    };
    auto store_shared = [&](int buf) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) As[buf][a_k][a_m + i * A_STEP] = a_reg[i];
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            if constexpr (LOAD == BLoad::Image)
                Bs[buf][b_k + i * B_STEP][b_p] = b_reg[i];
            else
                Bs[buf][b_k][b_p + i * B_STEP] = b_reg[i];
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    load_global(0);
    store_shared(0);
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < a.K; k0 += BK) {
        const bool more = k0 + BK < a.K;
        if (more) load_global(k0 + BK);   /* in flight during the FMAs below */
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float av[TM], bv[TN];
            if constexpr (TM % 4 == 0) {
#pragma unroll
                for (int q = 0; q < TM / 4; ++q) {
                    const float4 v = *reinterpret_cast<const float4 *>(&As[buf][kk][ty * TM + 4 * q]);
                    av[4 * q] = v.x; av[4 * q + 1] = v.y; av[4 * q + 2] = v.z; av[4 * q + 3] = v.w;
                }
            } else {
#pragma unroll
                for (int i = 0; i < TM; ++i) av[i] = As[buf][kk][ty * TM + i];
            }
            /* A thread's pixel columns are COLS apart, not adjacent: the reads here are
             * conflict-free and the epilogue's stores are coalesced across the warp. */
#pragma unroll
            for (int j = 0; j < TN; ++j) bv[j] = Bs[buf][kk][tx + j * COLS];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        /* The other buffer was last read before the previous barrier: safe to fill. */
        if (more) store_shared(buf ^ 1);
        __syncthreads();
        buf ^= 1;
    }

    /* Epilogue: bias and ReLU on the way out, as the CPU kernel does after its sum. */
    int pix_n[TN], pix_ohw[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int p = p0 + tx + j * COLS;
        pix_n[j] = -1;
        pix_ohw[j] = 0;
        if (p < a.P) a.div_ohw.divmod(p, pix_n[j], pix_ohw[j]);
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
        if (m >= a.OCg) continue;
        const int oc = g * a.OCg + m;
        const float b = a.bias ? __ldg(a.bias + oc) : 0.f;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            if (pix_n[j] < 0) continue;
            float v = acc[i][j] + b;
            if (a.relu) v = relu_keep_nan(v);
            a.out[((size_t)pix_n[j] * a.OC + oc) * a.OHW + pix_ohw[j]] = v;
        }
    }
}

/* One tile shape: its kernel, its occupancy (asked of the runtime once), and how fast
 * it turns FMAs per tile area compared to the 128x128 tile. */
template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
struct GemmTile {
    static constexpr int threads = (BM / TM) * (BN / TN);

    static int blocks_per_sm() {
        static std::atomic<int> cached{0};
        int n = cached.load(std::memory_order_relaxed);
        if (n > 0) return n;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &n, gemm_tile_kernel<BM, BN, BK, TM, TN, LOAD>, threads, 0) != cudaSuccess ||
            n < 1) {
            (void)cudaGetLastError();
            return 1;   /* not cached: ask again next time */
        }
        cached.store(n, std::memory_order_relaxed);
        return n;
    }

    /* Time in units of one 128x128 tile-step: waves of blocks times the tile area over
     * the tile's relative speed (small tiles reload shared memory more per FMA). */
    static double cost(const GemmArgs &a, int groups, int sms, double speed) {
        const double blocks = (double)ceil_div(a.P, BN) * ceil_div(a.OCg, BM) * groups;
        const double per_wave = (double)sms * blocks_per_sm();
        const double waves = ceil(blocks / per_wave);
        return waves * BM * BN / speed;
    }

    static acn_status launch(const GemmArgs &a, int groups, cudaStream_t stream, const char *name) {
        const dim3 grid(ceil_div(a.P, BN), ceil_div(a.OCg, BM), groups);
        if (grid.y > 65535u || grid.z > 65535u)
            return cuda_fail_msg(ACN_EINVAL, "%s: %d output channels in %d groups exceed the grid",
                                 name, a.OCg, groups);
        gemm_tile_kernel<BM, BN, BK, TM, TN, LOAD><<<grid, threads, 0, stream>>>(a);
        return check_launch(name);
    }
};

/* ALEXNET_C_CUDA_TILE=large|medium|small forces one tile shape (tests of every path,
 * tuning on a new GPU); read once. 0: the cost model decides. */
inline int forced_tile(void) {
    static const int forced = [] {
        const char *v = getenv("ALEXNET_C_CUDA_TILE");
        if (!v) return 0;
        if (strcmp(v, "large") == 0) return 1;
        if (strcmp(v, "medium") == 0) return 2;
        if (strcmp(v, "small") == 0) return 3;
        return 0;
    }();
    return forced;
}

/* Picks the tile with the least modelled time: big tiles for big problems, small ones
 * when big tiles would leave most multiprocessors idle (batch 1, the 13x13 layers).
 * The relative speeds are estimates from instruction counts per FMA (shared loads,
 * index arithmetic), to be tuned on hardware. */
template <BLoad LOAD>
acn_status gemm_tiled(const GemmArgs &a, int groups, cudaStream_t stream, const char *name) {
    using Large = GemmTile<128, 128, 8, 8, 8, LOAD>;
    using Medium = GemmTile<64, 64, 16, 4, 4, LOAD>;
    using Small = GemmTile<32, 32, 16, 2, 2, LOAD>;
    switch (forced_tile()) {
    case 1: return Large::launch(a, groups, stream, name);
    case 2: return Medium::launch(a, groups, stream, name);
    case 3: return Small::launch(a, groups, stream, name);
    default: break;
    }
    const int sms = sm_count();
    const double c_large = Large::cost(a, groups, sms, 1.0);
    const double c_medium = Medium::cost(a, groups, sms, 0.85);
    const double c_small = Small::cost(a, groups, sms, 0.5);
    if (c_large <= c_medium && c_large <= c_small) return Large::launch(a, groups, stream, name);
    if (c_medium <= c_small) return Medium::launch(a, groups, stream, name);
    return Small::launch(a, groups, stream, name);
}

}  // namespace acn

#endif
