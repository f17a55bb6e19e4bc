/* Internals shared by the CPU kernel files; not part of the public header. */
#ifndef ACN_CPU_INTERNAL_H
#define ACN_CPU_INTERNAL_H

#include "alexnet_c.h"

#if defined(__x86_64__) || defined(__i386__)
#define ACN_X86 1
#else
#define ACN_X86 0
#endif

#if ACN_X86
#include <immintrin.h>
/* The first min(n, 16) lanes of a 16-lane mask: a row's tail, a short run. */
static inline __mmask16 acn_lanes_left(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}
#endif

int acn_in_forked_child(void);
/* Seconds on the monotonic clock (machine.c): the probes and the stage timer. */
double acn_now_seconds(void);
/* Applies ALEXNET_C_ISA (generic|avx2|avx512); returns 0, or -1 when the value
 * was unknown or unsupported (the best ISA is kept). */
int acn_isa_init_from_env(void);

/* 64-byte aligned; on 2 MB pages from 2 MB up where the OS allows. free() it. */
void *acn_alloc_large(size_t bytes);

/* Grow-only buffer owned by the calling OS thread and freed when it exits, so
 * repeated kernel calls allocate nothing and ended threads leak nothing. */
enum { ACN_TLS_PACK_A = 0, ACN_TLS_PACK_B = 1, ACN_TLS_WORK = 2, ACN_TLS_CONV_ROWS = 3, ACN_TLS_WINO_V = 4,
       ACN_TLS_WINO_M = 5, ACN_TLS_SLOTS = 6 };
float *acn_thread_buffer(int slot, size_t floats);

/* ---- GEMM internals (gemm.c) ----
 *
 * Packed A: ceil(M/MR) panels, each MR rows by all K, element (i,k) of panel p
 * at pa[(p*K + k)*MR + i], rows past M zero. Conv weights are packed once in this
 * layout when a net is built; a depth block [pc, pc+kc) of a panel is then just
 * the contiguous slice pa + (p*K + pc)*MR.
 *
 * Packed B block: kc rows (from p0) by NR-wide column panels starting at column
 * j0, panel after panel, dst[(panel*kc + k)*NR + j]; columns past ncols are zero.
 * ctx is the caller's description of B (a strided matrix, an image for conv). */
typedef void (*acn_pack_b_fn)(float *dst, const void *ctx, int p0, int kc, int j0, int ncols, int NR);

/* Strided B: element (k,j) at B[k*rsb + j*csb]; isa: the active kernel's. A B
 * stored transposed (rsb == 1: the fully-connected weights, read as W^T) is
 * packed with 16x16 (AVX-512) or 8x8 (AVX2) register transposes. */
typedef struct { const float *B; ptrdiff_t rsb, csb; acn_isa isa; } acn_strided_b;
/* The packed-B block of a B whose column j is the contiguous row bt + j*ldb. */
void acn_pack_bt_avx512(float *dst, const float *bt, ptrdiff_t ldb, int p0, int kc, int j0, int ncols, int NR);
void acn_pack_bt_avx2(float *dst, const float *bt, ptrdiff_t ldb, int p0, int kc, int j0, int ncols, int NR);
void acn_pack_b_strided(float *dst, const void *ctx, int p0, int kc, int j0, int ncols, int NR);

size_t acn_packed_a_floats(int M, int K, int MR);
/* A (M,K) with element (i,k) at A[i*rsa + k*csa]. */
void acn_pack_a(float *dst, const float *A, ptrdiff_t rsa, ptrdiff_t csa, int M, int K, int MR);

/* Micro-kernel: one full MR x NR tile of C (row stride ldc) from a_panel (kc x MR)
 * and b_panel (kc x NR). flags: ACN_UK_ACCUM adds to C instead of overwriting;
 * ACN_UK_BIAS adds bias[i] to row i; ACN_UK_RELU then applies max(0, x), NaN kept.
 * Bias and ReLU are only asked for on the last depth block. */
enum { ACN_UK_ACCUM = 1, ACN_UK_BIAS = 2, ACN_UK_RELU = 4 };
typedef void (*acn_ukernel_fn)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               int flags, const float *bias);

/* Optional narrow kernel for a last, partial column panel: the MR x w tile for
 * w = cols rounded up to a multiple of step (< NR) from the same packed panels
 * (B rows still NR apart), stored without flags into c (row stride ldc). A
 * 13x13 output at batch 1 is 169 = 3 x 48 + 25 columns: the full kernel would
 * compute 192, this one 176. */
typedef void (*acn_narrow_fn)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, int cols);

typedef struct {
    int MR, NR;
    acn_ukernel_fn kernel;
    acn_isa isa;
    acn_narrow_fn narrow;   /* NULL: partial panels use kernel */
    int narrow_step;
} acn_ukernel;

const acn_ukernel *acn_ukernel_generic(void);
const acn_ukernel *acn_ukernel_avx2(void);     /* NULL off x86 */
const acn_ukernel *acn_ukernel_avx512(void);   /* NULL off x86 */
const acn_ukernel *acn_active_ukernel(void);

/* C = A x B (+ bias, ReLU) over the columns [j0, j1), on the calling thread only.
 * Column j lives in segment s = j / seg_cols at C + s*seg_stride + (j % seg_cols)
 * (one segment per image for a batched conv; plain GEMM: seg_cols = N). */
typedef struct {
    const acn_ukernel *uk;
    const float *pa;                        /* packed A for uk->MR */
    int M, N, K;
    acn_pack_b_fn pack_b; const void *b_ctx;
    float *C; ptrdiff_t ldc; int seg_cols; ptrdiff_t seg_stride;
    const float *bias; int bias_mode; int relu;
} acn_gemm_plan;

int acn_gemm_range(const acn_gemm_plan *g, int j0, int j1);
/* Splits the columns over nt threads (NR-aligned ranges, and A-panel row ranges
 * when the columns are few; no barrier inside). */
int acn_gemm_parallel(const acn_gemm_plan *g, int nt);

/* ---- convolution with pre-packed weights (conv2d.c) ---- */
size_t acn_conv_packed_floats(int C, int OC, int KH, int KW, int groups, int MR);
void acn_conv_pack_weights(float *dst, const float *weight, int C, int OC, int KH, int KW, int groups, int MR);
/* Scratch for the zero-padded (and, for SW > 1, phase-split) copy of the input. */
size_t acn_conv_phase_floats(int N, int C, int H, int W, int SW, int PH, int PW);
/* conv2d_forward_cpu's arguments, with the weights packed by acn_conv_pack_weights
 * for uk->MR; work: acn_conv_phase_floats() floats, or NULL for a thread buffer. */
int acn_conv2d_packed(float *out, const float *inp, const float *packed, const acn_ukernel *uk,
                      const float *bias, int N, int C, int H, int W, int OC, int KH, int KW,
                      int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, float *work);
/* ---- Winograd F(2x2, 3x3) internals (winograd.c); the mode is in alexnet_c.h ----
 * Returned by acn_wino_conv when a non-finite value appeared: the output is
 * then incomplete and the caller recomputes the layer with the direct path. */
enum { ACN_WINO_NONFINITE = 100 };
int acn_wino_applies(int KH, int KW, int SH, int SW, int groups, int N, int OH, int OW, const acn_ukernel *uk);
/* K x K kernels, K = 3 or 5 (four 3x3 blocks), stride 1, one group. */
size_t acn_wino_packed_floats(int C, int OC, int K, int MR);
/* 1: packed, every value finite; 0: packed, some not finite (do not use); -1: no memory. */
int acn_wino_pack_weights(float *dst, const float *weight, int C, int OC, int K, int MR);
/* inp (N,C,H,W), u from acn_wino_pack_weights for uk->MR, out (N,OC,H+2PH-K+1,W+2PW-K+1). */
int acn_wino_conv(float *out, const float *inp, const float *u, const acn_ukernel *uk, const float *bias,
                  int N, int C, int H, int W, int OC, int K, int PH, int PW, int relu);

static inline float acn_relu1(float x) { return x < 0.0f ? 0.0f : x; }   /* NaN stays NaN */

/* a * b + c for the portable kernels: one fused instruction where the target has a
 * fast one (aarch64's fmla), as in the AVX2/AVX-512 kernels; else a multiply and an
 * add. The build's -std=c11 stops GCC from fusing on its own (-ffp-contract=off in
 * ISO mode): NEON would then run two instructions per multiply-add. */
static inline float acn_madd(float a, float b, float c)
{
#ifdef __FP_FAST_FMAF
    return __builtin_fmaf(a, b, c);
#else
    return a * b + c;
#endif
}

#endif
