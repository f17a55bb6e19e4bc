/* Internals shared by the CPU kernel files; not part of the public header. */
#ifndef ACN_CPU_INTERNAL_H
#define ACN_CPU_INTERNAL_H

#include "alexnet_c.h"

#if defined(__x86_64__) || defined(__i386__)
#define ACN_X86 1
#else
#define ACN_X86 0
#endif

int acn_in_forked_child(void);
/* Applies ALEXNET_C_ISA (generic|avx2|avx512); returns 0, or -1 when the value
 * was unknown or unsupported (the best ISA is kept). */
int acn_isa_init_from_env(void);

/* Grow-only buffer owned by the calling OS thread and freed when it exits, so
 * repeated kernel calls allocate nothing and ended threads leak nothing. */
enum { ACN_TLS_PACK_A = 0, ACN_TLS_PACK_B = 1, ACN_TLS_SLOTS = 2 };
float *acn_thread_buffer(int slot, size_t floats);

/* ---- GEMM internals (gemm.c) ---- */

/* Fills a packed B block: kc rows (from p0) by nr-wide column panels starting at
 * column j0, panel after panel, dst[(panel*kc + k)*NR + j]; columns past ncols
 * are zero. ctx is the caller's description of B. */
typedef void (*acn_pack_b_fn)(float *dst, const void *ctx, int p0, int kc, int j0, int ncols, int NR);

typedef struct {
    const float *A; ptrdiff_t rsa, csa;    /* A (M,K) strided */
    acn_pack_b_fn pack_b; const void *b_ctx;
    float *C; ptrdiff_t ldc;
    int M, N, K;
    const float *bias; int bias_mode; int relu;
} acn_gemm_args;

int acn_sgemm(const acn_gemm_args *g);

/* Strided B: element (k,j) at B[k*rsb + j*csb]. */
typedef struct { const float *B; ptrdiff_t rsb, csb; } acn_strided_b;
void acn_pack_b_strided(float *dst, const void *ctx, int p0, int kc, int j0, int ncols, int NR);

/* Micro-kernel: C[MR x NR] (row stride ldc) = or += a_panel (kc x MR) * b_panel (kc x NR). */
typedef void (*acn_ukernel_fn)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, int accumulate);

typedef struct {
    int MR, NR;
    acn_ukernel_fn kernel;
} acn_ukernel;

const acn_ukernel *acn_ukernel_generic(void);
const acn_ukernel *acn_ukernel_avx2(void);     /* NULL off x86 */
const acn_ukernel *acn_ukernel_avx512(void);   /* NULL off x86 */
const acn_ukernel *acn_active_ukernel(void);

static inline float acn_relu1(float x) { return x < 0.0f ? 0.0f : x; }   /* NaN stays NaN */

#endif
