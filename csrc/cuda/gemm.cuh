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
 *   Image loader: B[k, p] = inp[n, g*Cg + c, oh*SH - PH + kh, ow*SW - PW + kw], 0 outside;
 *   DilatedImage: the same with taps DH rows and DW columns apart (kh*DH, kw*DW).
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

#include <mma.h>

#include "cuda_common.cuh"

namespace acn {

struct GemmArgs {
    float *out;
    const float *inp, *weight, *bias;   /* bias (OC) or NULL */
    int C, H, W;                        /* input image per batch item (Image loader) */
    int OC, OHW, OW;                    /* out (N, OC, OHW) */
    int KW, SH, SW, PH, PW, DH, DW;
    int Cg, OCg;                        /* channels per group */
    int K, P;                           /* K = Cg*KH*KW, P = N*OH*OW */
    int relu;
    FastDiv div_khw, div_kw, div_ohw, div_ow;
};

/* The largest K (and linear's in_features) the launchers accept. The k loops count in
 * int and look one BK step ahead (k0 + BK + BK - 1), linear's streaming kernel steps a
 * warp at a time: without this headroom below INT_MAX the counters would overflow. */
constexpr int kMaxK = INT_MAX - 1024;

/* DilatedImage is a loader of its own so that AlexNet's convolutions (dilation 1) run
 * the Image kernels as they were tuned: with the two multiplications in its gather,
 * ptxas gave the 32x32 TF32 tile 64 registers and a spill on sm_90 (72 and none
 * without). Image and Rows keep the values 0 and 1 that the kernels' mangled names
 * carry (tests/test_nvcc_build.py). */
enum class BLoad { Image, Rows, DilatedImage };

/* Moves one BK-deep step of A (BM x BK of the weight) and B (BK x BN, gathered by LOAD)
 * from global memory into registers (load_global) and then into the block's k-major
 * shared tiles (store_shared), NT threads sharing the work. Both GEMM kernels stage
 * their operands through it; the tensor-core kernel rounds to TF32 on the way in. */
template <int BM, int BN, int BK, int NT, BLoad LOAD>
struct TileStager {
    static constexpr int A_PER = BM * BK / NT;       /* A elements each thread stages per step */
    static constexpr int B_PER = BN * BK / NT;
    static constexpr int A_STEP = NT / BK;           /* A: thread keeps one k, rows A_STEP apart */
    static constexpr bool IMAGE = LOAD != BLoad::Rows;   /* Image or DilatedImage */
    static constexpr int B_STEP = IMAGE ? NT / BN : NT / BK;
    static_assert(BM * BK % NT == 0 && BN * BK % NT == 0, "tile not divisible among threads");
    static_assert(NT % BK == 0 && NT % BN == 0, "loader mapping needs NT % BK == NT % BN == 0");

    const GemmArgs &a;
    const int m0, p0;
    int a_k, a_m, b_p, b_k;
    const float *a_rows;
    const float *img;
    int ih0 = 0, iw0 = 0;
    bool p_ok = false;
    float a_reg[A_PER], b_reg[B_PER];

    __device__ __forceinline__ TileStager(const GemmArgs &args, int t, int g, int m0_, int p0_)
        : a(args), m0(m0_), p0(p0_) {
        /* A loader: one k column of the tile, A_PER rows. */
        a_k = t % BK;
        a_m = t / BK;
        a_rows = a.weight + (size_t)g * a.OCg * a.K;
        /* B loader. Image: one pixel column per thread for the whole K loop, so its
         * (n, oh, ow) decomposition is done once here; k rows B_STEP apart. Rows: like A. */
        b_p = IMAGE ? t % BN : t / BK;
        b_k = IMAGE ? t / BN : t % BK;
        img = a.inp;
        if constexpr (IMAGE) {
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
    }

    __device__ __forceinline__ void load_global(int k0) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
            const int m = m0 + a_m + i * A_STEP, k = k0 + a_k;
            a_reg[i] = (m < a.OCg && k < a.K) ? __ldg(a_rows + (size_t)m * a.K + k) : 0.f;
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            float v = 0.f;
            if constexpr (IMAGE) {
                const int k = k0 + b_k + i * B_STEP;
                if (p_ok && k < a.K) {
                    int c, r, kh, kw;
                    a.div_khw.divmod(k, c, r);
                    a.div_kw.divmod(r, kh, kw);
                    if constexpr (LOAD == BLoad::DilatedImage) {
                        kh *= a.DH;
                        kw *= a.DW;
                    }
                    const int ih = ih0 + kh, iw = iw0 + kw;
                    /* unsigned compare: one test covers < 0 and >= H (zero padding) */
                    if ((unsigned)ih < (unsigned)a.H && (unsigned)iw < (unsigned)a.W) {
                        /* 64-bit here: in int, ptxas spilled in the 32x32 TF32 tile */
                        if constexpr (LOAD == BLoad::DilatedImage)
                            v = __ldg(img + ((size_t)c * a.H + ih) * a.W + iw);
                        else
                            v = __ldg(img + (c * a.H + ih) * a.W + iw);
                    }
                }
            } else {
                const int p = p0 + b_p + i * B_STEP, k = k0 + b_k;
                if (p < a.P && k < a.K) v = __ldg(a.inp + (size_t)p * a.K + k);
            }
            b_reg[i] = v;
        }
    }

    /* As (BK, BM + pad), Bs (BK, BN + pad): one buffer of the kernel's double buffer. */
    template <int LDA, int LDB, class Round>
    __device__ __forceinline__ void store_shared(float (&As)[BK][LDA], float (&Bs)[BK][LDB],
                                                 Round round) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) As[a_k][a_m + i * A_STEP] = round(a_reg[i]);
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            if constexpr (IMAGE)
                Bs[b_k + i * B_STEP][b_p] = round(b_reg[i]);
            else
                Bs[b_k][b_p + i * B_STEP] = round(b_reg[i]);
        }
    }
};

struct KeepFloat {
    __device__ __forceinline__ float operator()(float v) const { return v; }
};

__device__ __forceinline__ float bias_of(const GemmArgs &a, int oc) {
    return a.bias ? __ldg(a.bias + oc) : 0.f;
}

/* The epilogue of both kernels: bias and ReLU on the way out, as the CPU kernel does
 * after its sum, to out[n, oc, ohw]. */
__device__ __forceinline__ void store_output(const GemmArgs &a, int oc, float bias, int n, int ohw,
                                             float sum) {
    float v = sum + bias;
    if (a.relu) v = relu_keep_nan(v);
    a.out[((size_t)n * a.OC + oc) * a.OHW + ohw] = v;
}

template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
__device__ __forceinline__ void gemm_tile(const GemmArgs &a) {
    constexpr int NT = (BM / TM) * (BN / TN);
    constexpr int COLS = BN / TN;             /* threads across a tile row */

    /* +4: rows of a tile land on different banks when stored transposed, and a row
     * start stays 16-byte aligned for the float4 reads of A. */
    __shared__ __align__(16) float As[2][BK][BM + 4];
    __shared__ __align__(16) float Bs[2][BK][BN + 4];

    const int t = threadIdx.x;
    const int g = blockIdx.z;
    const int m0 = blockIdx.y * BM;
    const int p0 = blockIdx.x * BN;
    const int tx = t % COLS, ty = t / COLS;
    TileStager<BM, BN, BK, NT, LOAD> stage(a, t, g, m0, p0);

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    stage.load_global(0);
    stage.store_shared(As[0], Bs[0], KeepFloat());
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < a.K; k0 += BK) {
        const bool more = k0 + BK < a.K;
        if (more) stage.load_global(k0 + BK);   /* in flight during the FMAs below */
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
        if (more) stage.store_shared(As[buf ^ 1], Bs[buf ^ 1], KeepFloat());
        __syncthreads();
        buf ^= 1;
    }

    /* Epilogue: the pixels' (n, ohw), computed once per column. */
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
        const float b = bias_of(a, oc);
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            if (pix_n[j] < 0) continue;
            float v = acc[i][j] + b;
            if (a.relu) v = relu_keep_nan(v);
            a.out[((size_t)pix_n[j] * a.OC + oc) * a.OHW + pix_ohw[j]] = v;
        }
    }
}

template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
gemm_tile_kernel(const GemmArgs a) {
    gemm_tile<BM, BN, BK, TM, TN, LOAD>(a);
}

/* The 128x128 tile's kernel asks for two blocks per multiprocessor: that caps a thread
 * at 128 registers, which its 64 accumulators fit without spilling (left alone, ptxas
 * takes 129: one block per SM). The smaller tiles stay without the hint, which would
 * make ptxas spend registers (40 -> 80 for the 32x32 tile) and lose occupancy. */
template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
gemm_tile_kernel_2blocks(const GemmArgs a) {
    gemm_tile<BM, BN, BK, TM, TN, LOAD>(a);
}

/* The tensor-core GEMM behind precision="tf32" (sm_80 and newer): the same operands,
 * staging and epilogue as gemm_tile_kernel, with A and B rounded to TF32 (10-bit
 * mantissa, cvt.rna) on their way into shared memory and multiplied by WMMA in 16x16x8
 * steps with float accumulators. Each of the block's warps owns a WM x WN piece of the
 * BM x BN tile: (WM/16) x (WN/16) accumulator fragments. The shared tiles keep the
 * k-major layout of the SIMT kernel: As[k][m] is A column-major, Bs[k][p] is B
 * row-major, both with a leading dimension (BM + 4, BN + 4) that is a multiple of 4
 * and rows 8 apart that are 32-byte aligned, as load_matrix_sync requires.
 * The accumulators reach the output through a 16x16 patch of shared memory per warp
 * (the fragments' register layout is not specified), where bias and ReLU are added.
 * Where the time goes: unmeasured so far (no GPU has run it); by its design, in the
 * B gather for the short-K conv1 and in the shared-memory traffic for the rest. */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define ACN_TF32_MMA 1
#else
#define ACN_TF32_MMA 0
#endif

struct RoundTf32 {
    __device__ __forceinline__ float operator()(float v) const {
#if ACN_TF32_MMA
        return nvcuda::wmma::__float_to_tf32(v);
#else
        return v;
#endif
    }
};

template <int BM, int BN, int BK, int WM, int WN, BLoad LOAD>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * kWarp)
gemm_tf32_kernel(const GemmArgs a) {
#if ACN_TF32_MMA
    using namespace nvcuda;
    constexpr int WARPS_N = BN / WN;
    constexpr int NT = (BM / WM) * WARPS_N * kWarp;
    constexpr int FM = WM / 16, FN = WN / 16;
    static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0 && BK % 8 == 0,
                  "warp tiles of whole 16x16x8 fragments");
    static_assert(2 * BK * (BM + 4) >= (NT / kWarp) * 16 * 16, "the epilogue patches fit in As");

    __shared__ __align__(32) float As[2][BK][BM + 4];
    __shared__ __align__(32) float Bs[2][BK][BN + 4];

    const int t = threadIdx.x;
    const int g = blockIdx.z;
    const int m0 = blockIdx.y * BM;
    const int p0 = blockIdx.x * BN;
    const int warp = t / kWarp, lane = t % kWarp;
    const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
    TileStager<BM, BN, BK, NT, LOAD> stage(a, t, g, m0, p0);

    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);

    stage.load_global(0);
    stage.store_shared(As[0], Bs[0], RoundTf32());
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < a.K; k0 += BK) {
        const bool more = k0 + BK < a.K;
        if (more) stage.load_global(k0 + BK);   /* in flight during the MMAs below */
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fa[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb[FN];
#pragma unroll
            for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(fa[i], &As[buf][kk][wm0 + 16 * i], BM + 4);
#pragma unroll
            for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(fb[j], &Bs[buf][kk][wn0 + 16 * j], BN + 4);
#pragma unroll
            for (int i = 0; i < FM; ++i)
#pragma unroll
                for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        /* The other buffer was last read before the previous barrier: safe to fill. */
        if (more) stage.store_shared(As[buf ^ 1], Bs[buf ^ 1], RoundTf32());
        __syncthreads();
        buf ^= 1;
    }

    /* After the loop's last barrier nothing reads As: each warp takes a 16x16 patch of
     * it. Lanes walk a patch row by row, so a half-warp stores 16 adjacent pixels. */
    float *patch = &As[0][0][0] + warp * 16 * 16;
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
        for (int j = 0; j < FN; ++j) {
            wmma::store_matrix_sync(patch, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 16 * 16; e += kWarp) {
                const int m = m0 + wm0 + 16 * i + e / 16, p = p0 + wn0 + 16 * j + e % 16;
                if (m >= a.OCg || p >= a.P) continue;
                int n, ohw;
                a.div_ohw.divmod(p, n, ohw);
                const int oc = g * a.OCg + m;
                store_output(a, oc, bias_of(a, oc), n, ohw, patch[e]);
            }
            __syncwarp();   /* the patch is read before the next fragment overwrites it */
        }
    }
#else
    /* Not reached: check_tf32 refuses TF32 where this code is what the GPU runs (below
     * compute capability 8.0, or an older arch's PTX JIT-compiled for a newer GPU).
     * Should it ever run, a fault, not an output left unwritten. */
    (void)a;
    __trap();
#endif
}

/* One tile shape of either kernel: its occupancy (asked of the runtime once) and its
 * modelled time. KERNEL computes BM x BN outputs per block of THREADS threads. */
template <int BM, int BN, int THREADS, void (*KERNEL)(GemmArgs)>
struct GemmTile {
    static constexpr int threads = THREADS;

    /* Cached per device, like cached_attribute (runtime.cu): GPUs of different kinds in
     * one host fit different numbers of blocks. A device beyond the slots (or an
     * unknown one) is asked every time. */
    static int blocks_per_sm() {
        static std::atomic<int> cached[64];
        int dev = -1;
        if (cudaGetDevice(&dev) != cudaSuccess) {
            (void)cudaGetLastError();
            dev = -1;
        }
        const bool slot = dev >= 0 && dev < 64;
        int n = slot ? cached[dev].load(std::memory_order_relaxed) : 0;
        if (n > 0) return n;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, KERNEL, threads, 0) != cudaSuccess ||
            n < 1) {
            (void)cudaGetLastError();
            return 1;   /* not cached: ask again next time */
        }
        if (slot) cached[dev].store(n, std::memory_order_relaxed);
        return n;
    }

    /* Time in units of one largest-tile step: waves of blocks times the tile area over
     * the tile's relative speed (small tiles reload shared memory more per FMA). */
    static double cost(const GemmArgs &a, int groups, int sms, double speed) {
        const double blocks = (double)ceil_div(a.P, BN) * ceil_div(a.OCg, BM) * groups;
        const double per_wave = (double)sms * blocks_per_sm();
        const double waves = ceil(blocks / per_wave);
        return waves * BM * BN / speed;
    }

    /* grid.y and grid.z stop at 65535: a smaller tile may need too many rows of blocks
     * where a larger one does not. */
    static bool fits(const GemmArgs &a, int groups) {
        return ceil_div(a.OCg, BM) <= 65535 && groups <= 65535;
    }

    static acn_status launch(const GemmArgs &a, int groups, cudaStream_t stream, const char *name) {
        const dim3 grid(ceil_div(a.P, BN), ceil_div(a.OCg, BM), groups);
        if (!fits(a, groups))
            return cuda_fail_msg(ACN_EINVAL, "%s: %d output channels in %d groups exceed the grid",
                                 name, a.OCg, groups);
        KERNEL<<<grid, threads, 0, stream>>>(a);
        return check_launch(name);
    }
};

template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
using SimtTile = GemmTile<BM, BN, (BM / TM) * (BN / TN), gemm_tile_kernel<BM, BN, BK, TM, TN, LOAD>>;
template <int BM, int BN, int BK, int TM, int TN, BLoad LOAD>
using SimtTile2 = GemmTile<BM, BN, (BM / TM) * (BN / TN), gemm_tile_kernel_2blocks<BM, BN, BK, TM, TN, LOAD>>;
template <int BM, int BN, int BK, int WM, int WN, BLoad LOAD>
using Tf32Tile = GemmTile<BM, BN, (BM / WM) * (BN / WN) * kWarp, gemm_tf32_kernel<BM, BN, BK, WM, WN, LOAD>>;

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
template <class Large, class Medium, class Small>
acn_status launch_cheapest(const GemmArgs &a, int groups, cudaStream_t stream, const char *name) {
    switch (forced_tile()) {
    case 1: return Large::launch(a, groups, stream, name);
    case 2: return Medium::launch(a, groups, stream, name);
    case 3: return Small::launch(a, groups, stream, name);
    default: break;
    }
    const int sms = sm_count();
    const double never = HUGE_VAL;   /* a tile whose grid does not fit */
    const double c_large = Large::fits(a, groups) ? Large::cost(a, groups, sms, 1.0) : never;
    const double c_medium = Medium::fits(a, groups) ? Medium::cost(a, groups, sms, 0.85) : never;
    const double c_small = Small::fits(a, groups) ? Small::cost(a, groups, sms, 0.5) : never;
    if (c_large <= c_medium && c_large <= c_small) return Large::launch(a, groups, stream, name);
    if (c_medium <= c_small) return Medium::launch(a, groups, stream, name);
    return Small::launch(a, groups, stream, name);
}

/* precision: Precision::Float32 runs the SIMT kernel (fp32 FMAs, the parity path);
 * Precision::Tf32 the tensor-core kernel, refused below compute capability 8.0. */
template <BLoad LOAD>
acn_status gemm_tiled(const GemmArgs &a, int groups, Precision precision, cudaStream_t stream,
                      const char *name) {
    if (precision == Precision::Tf32) {
        ACN_TRY(check_tf32(name));
        return launch_cheapest<Tf32Tile<128, 128, 16, 64, 32, LOAD>, Tf32Tile<64, 64, 16, 32, 32, LOAD>,
                               Tf32Tile<32, 32, 16, 16, 16, LOAD>>(a, groups, stream, name);
    }
    return launch_cheapest<SimtTile2<128, 128, 8, 8, 8, LOAD>, SimtTile<64, 64, 16, 4, 4, LOAD>,
                           SimtTile<32, 32, 16, 2, 2, LOAD>>(a, groups, stream, name);
}

}  // namespace acn

#endif
