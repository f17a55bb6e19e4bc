/* alexnet_c.h: every kernel's signature, CPU and CUDA. No Python here.
 *
 * Conventions: output first, then inputs, then weights, then sizes. Every array
 * is float32, C-contiguous, and its shape is given in the comment above the
 * function. Kernels return an acn_status and never exit, abort or touch Python.
 */
#ifndef ALEXNET_C_H
#define ALEXNET_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ACN_OK = 0,
    ACN_ENOMEM = 1,      /* host allocation failed */
    ACN_EINVAL = 2,      /* sizes that the kernel cannot handle */
    ACN_ECUDA = 3,       /* a CUDA call failed; cuda_last_error() has the text */
    ACN_ECUDA_OOM = 4,   /* cudaMalloc ran out of device memory */
    ACN_ENODEV = 5,      /* CUDA asked for, but no usable device or driver */
    ACN_EUNSUPPORTED = 6 /* this device cannot do what was asked (TF32 below sm_80) */
} acn_status;

/* ---- output sizes: one definition for the glue, the kernels and the nets ----
 * K taps spaced D apart span D*(K-1) + 1 input rows. A window of that span slides over
 * the n rows padded by p on each side in steps of s: PyTorch's floor-mode output size,
 * 0 when the span does not fit (ceil_mode's extra window is the glue's). */
static inline long long acn_dilated_span(int k, int d) { return (long long)d * (k - 1) + 1; }
static inline long long acn_out_size(long long n, int k, int s, int p, int d)
{
    const long long room = n + 2LL * p - acn_dilated_span(k, d);
    return room < 0 ? 0 : room / s + 1;
}

/* ---- threads (cpu/threads.c) ------------------------------------------- */
int acn_get_num_threads(void);
void acn_set_num_threads(int n);
/* Called once at import: reads ALEXNET_C_ISA and installs the fork handler. */
void acn_runtime_init(void);
/* 1 when ALEXNET_C_ISA named an unknown or unsupported ISA (the best one is used). */
int acn_isa_env_rejected(void);

/* ---- ISA selection (cpu/cpu_features.c) --------------------------------- */
typedef enum { ACN_ISA_GENERIC = 0, ACN_ISA_AVX2 = 1, ACN_ISA_AVX512 = 2 } acn_isa;
acn_isa acn_best_isa(void);          /* what this CPU supports */
acn_isa acn_active_isa(void);        /* what the kernels use now */
int acn_set_isa(acn_isa isa);        /* ACN_EINVAL if the CPU lacks it */
const char *acn_isa_name(acn_isa isa);

/* ---- Winograd F(2x2, 3x3) for 3x3 and 5x5 stride-1 convolutions (cpu/winograd.c) ----
 * off: never; on: wherever the shape allows; auto (default): where it is faster.
 * ALEXNET_C_WINOGRAD=off|on|auto sets it at start-up. */
typedef enum { ACN_WINO_OFF = 0, ACN_WINO_ON = 1, ACN_WINO_AUTO = 2 } acn_wino_mode;
void acn_set_winograd(acn_wino_mode mode);
acn_wino_mode acn_get_winograd(void);
const char *acn_wino_mode_name(acn_wino_mode mode);
/* Applies ALEXNET_C_WINOGRAD; -1 (and auto kept) when the value is unknown. */
int acn_wino_init_from_env(void);
int acn_wino_env_rejected(void);   /* 1 after such an unknown value */
/* 1 when a convolution of this shape would take the Winograd path now (with
 * the mode, ISA and thread count as they are): the benchmark's FLOP count. */
int acn_wino_would_apply(int KH, int KW, int stride, int groups, int N, int OH, int OW);

/* ---- machine ceilings for the benchmark (cpu/machine.c) ----------------
 * GFLOP/s of nt threads running independent fp32 FMA chains for ~seconds with
 * the active ISA; GB/s of nt threads summing buf (n floats) reps times (best). */
double acn_measure_fma_peak(int nt, double seconds);
double acn_measure_read_bw(const float *buf, size_t n, int reps, int nt);

/* ---- GEMM (cpu/gemm.c) --------------------------------------------------
 * C (M,N) row-major with leading dimension ldc.
 * A (M,K): element (i,k) at A[i*rsa + k*csa]  (any strides: lets callers pass
 * a transposed or strided view without copying).
 * B (K,N): element (k,j) at B[k*rsb + j*csb].
 * bias: NULL, or (M) when bias_mode == ACN_BIAS_ROW, or (N) when ACN_BIAS_COL.
 * relu: apply max(0, x) (NaN kept) after the bias.
 */
enum { ACN_BIAS_NONE = 0, ACN_BIAS_ROW = 1, ACN_BIAS_COL = 2 };
int sgemm_cpu(float *C, ptrdiff_t ldc,
              const float *A, ptrdiff_t rsa, ptrdiff_t csa,
              const float *B, ptrdiff_t rsb, ptrdiff_t csb,
              int M, int N, int K, const float *bias, int bias_mode, int relu);
/* Plain triple loop, the reference for sgemm_cpu. Same arguments. */
int sgemm_naive(float *C, ptrdiff_t ldc,
                const float *A, ptrdiff_t rsa, ptrdiff_t csa,
                const float *B, ptrdiff_t rsb, ptrdiff_t csb,
                int M, int N, int K, const float *bias, int bias_mode, int relu);

/* ---- convolution (cpu/conv2d.c) -----------------------------------------
 * out (N,OC,OH,OW), inp (N,C,H,W), weight (OC,C/groups,KH,KW), bias (OC) or NULL.
 * Tap (kh, kw) of output (oh, ow) reads input (oh*SH - PH + kh*DH, ow*SW - PW + kw*DW).
 * OH = acn_out_size(H, KH, SH, PH, DH), OW likewise; the caller checks OH, OW >= 1.
 * work: conv2d_workspace_floats(...) floats, or NULL for the kernel to allocate.
 */
size_t conv2d_workspace_floats(int C, int H, int W, int OC, int KH, int KW,
                               int SH, int SW, int PH, int PW, int groups);
int conv2d_forward_cpu(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int C, int H, int W, int OC, int KH, int KW,
                       int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, float *work);
/* Direct 7-deep loop, the reference for conv2d_forward_cpu. */
int conv2d_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int C, int H, int W, int OC, int KH, int KW,
                         int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, float *work);

/* ---- pooling (cpu/pool.c) -----------------------------------------------
 * out (N*C,OH,OW), indices (N*C,OH,OW) or NULL, inp (N*C,H,W). Padding counts as
 * -inf; NaN propagates. Window (oh, ow) takes rows oh*SH - PH + kh*DH, kh < KH, and
 * columns likewise. indices: where in its (H, W) plane each maximum is, as PyTorch
 * reports it (h*W + w; the first of equal maxima, the last NaN; a window of -inf
 * only gives its first tap inside the plane; with no tap inside, where it would
 * start, past the plane).
 * OH, OW are computed by the caller (PyTorch's ceil_mode rule lives there).
 */
int max_pool2d_forward_cpu(float *out, int64_t *indices, const float *inp, int NC, int H, int W,
                           int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                           int OH, int OW);
/* out (N*C,OH,OW), inp (N*C,H,W); window [floor(i*H/OH), ceil((i+1)*H/OH)). */
int adaptive_avg_pool2d_forward_cpu(float *out, const float *inp, int NC, int H, int W,
                                    int OH, int OW);

/* ---- linear (cpu/linear.c) ----------------------------------------------
 * out (N,Out), inp (N,In), weight (Out,In), bias (Out) or NULL.
 */
int linear_forward_cpu(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int In, int Out, int relu);
int linear_forward_naive(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int In, int Out, int relu);

/* ---- activations (cpu/activation.c) -------------------------------------
 * relu: out (n), inp (n); out may equal inp.
 * softmax / log_softmax: inp viewed as (outer, D, inner), reduced over D.
 */
int relu_forward_cpu(float *out, const float *inp, size_t n);
int softmax_forward_cpu(float *out, const float *inp, size_t outer, size_t D, size_t inner);
int log_softmax_forward_cpu(float *out, const float *inp, size_t outer, size_t D, size_t inner);

/* ---- whole network (cpu/net.c) ------------------------------------------
 * weights: 16 pointers, in state-dict order
 *   conv1.w conv1.b conv2.w conv2.b conv3.w conv3.b conv4.w conv4.b conv5.w conv5.b
 *   fc1.w fc1.b fc2.w fc2.b fc3.w fc3.b
 * with the shapes of acn_variant_spec(). The net does not copy or own them:
 * they must outlive it (module.c keeps the arrays alive).
 */
enum { ACN_VARIANT_TORCHVISION = 0, ACN_VARIANT_ORIGINAL = 1 };
enum { ACN_NUM_CONV = 5, ACN_NUM_FC = 3, ACN_NUM_WEIGHTS = 16 };

typedef struct {
    int in_c, out_c, k, stride, pad;
    int pool_after;            /* max-pool 3x3 stride 2 after the ReLU */
} acn_conv_spec;

typedef struct {
    acn_conv_spec conv[ACN_NUM_CONV];
    int avgpool;               /* AdaptiveAvgPool2d((6, 6)) before the classifier */
    int log_softmax;           /* log_softmax over the logits */
    int fc_in, fc_hidden;      /* 9216, 4096 */
} acn_variant_spec;

const acn_variant_spec *acn_variant(int variant);   /* NULL when unknown */

/* Spatial size after the features (before any avg-pool); < 1 when too small. */
void net_feature_size(int variant, int H, int W, int *FH, int *FW);

typedef struct acn_net acn_net;
acn_net *net_create_cpu(int variant, int num_classes, const float *const weights[ACN_NUM_WEIGHTS],
                        int *status);
void net_destroy_cpu(acn_net *net);
/* Linux overcommits: a too-large malloc succeeds and the process is killed when
 * the pages are touched. 0 when `bytes` exceeds the machine's physical memory. */
int acn_fits_in_memory(size_t bytes);
/* Floats of activation memory that a forward of this size needs. */
size_t net_arena_floats(const acn_net *net, int N, int H, int W);
/* out (N,num_classes), inp (N,3,H,W). Thread-safe: concurrent calls on one
 * net are allowed (a busy arena makes the second call use its own). */
int net_forward_cpu(acn_net *net, float *out, const float *inp, int N, int H, int W);
/* The same forward, with the wall time of each stage written to seconds[]
 * (ACN_NUM_STAGES entries, in this order; a stage that does not run gets 0).
 * Convs and fc1/fc2 include their fused ReLU. */
enum { ACN_STAGE_CONV1, ACN_STAGE_POOL1, ACN_STAGE_CONV2, ACN_STAGE_POOL2, ACN_STAGE_CONV3,
       ACN_STAGE_CONV4, ACN_STAGE_CONV5, ACN_STAGE_POOL5, ACN_STAGE_AVGPOOL, ACN_STAGE_FC1,
       ACN_STAGE_FC2, ACN_STAGE_FC3, ACN_STAGE_LOG_SOFTMAX, ACN_NUM_STAGES };
int net_forward_cpu_timed(acn_net *net, float *out, const float *inp, int N, int H, int W,
                          double seconds[ACN_NUM_STAGES]);

/* ---- CUDA (the .cu files in cuda/), present when built with ALEXNET_C_WITH_CUDA -------
 * The *_host_cuda functions take host pointers with the CPU kernel's arguments:
 * they copy in, run the CUDA kernel, copy out. Errors: cuda_last_error().
 * tf32 (conv2d, linear): 1 multiplies on tensor cores with the operands rounded to
 * TF32 (sm_80 and newer, else ACN_EUNSUPPORTED); 0 is strict float32.
 */
#ifdef ALEXNET_C_WITH_CUDA
int cuda_available(char *why, size_t why_len);   /* 1 usable, 0 not (why says) */
const char *cuda_last_error(void);               /* thread-local text */
int conv2d_host_cuda(float *out, const float *inp, const float *weight, const float *bias,
                     int N, int C, int H, int W, int OC, int KH, int KW,
                     int SH, int SW, int PH, int PW, int DH, int DW, int groups, int relu, int tf32);
int max_pool2d_host_cuda(float *out, int64_t *indices, const float *inp, int NC, int H, int W,
                         int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                         int OH, int OW);
int adaptive_avg_pool2d_host_cuda(float *out, const float *inp, int NC, int H, int W,
                                  int OH, int OW);
int linear_host_cuda(float *out, const float *inp, const float *weight, const float *bias,
                     int N, int In, int Out, int relu, int tf32);
int relu_host_cuda(float *out, const float *inp, size_t n);
int softmax_host_cuda(float *out, const float *inp, size_t outer, size_t D, size_t inner);
int log_softmax_host_cuda(float *out, const float *inp, size_t outer, size_t D, size_t inner);

typedef struct acn_cuda_net acn_cuda_net;
/* Uploads the weights once; they may be freed on the host afterwards. */
acn_cuda_net *net_create_cuda(int variant, int num_classes,
                              const float *const weights[ACN_NUM_WEIGHTS], int *status);
void net_destroy_cuda(acn_cuda_net *net);
/* out_host (N,num_classes), inp_host (N,3,H,W): copy in, all layers on the GPU, copy out. */
int net_forward_cuda(acn_cuda_net *net, float *out_host, const float *inp_host,
                     int N, int H, int W);
/* 1: the convolutions and the large-batch FC layers on tensor cores (TF32), 0: strict
 * float32 (the default). ACN_EUNSUPPORTED below sm_80, the net unchanged. */
int net_set_tf32_cuda(acn_cuda_net *net, int tf32);
/* counts[0]: CUDA graphs captured so far, counts[1]: forwards run by replaying one. */
void net_cuda_graph_counts(acn_cuda_net *net, long counts[2]);
#ifdef ALEXNET_C_CUDA_EMULATED
/* csrc/cuda_emu/selftest.cu: runs the emulator self-test `name` (out: n floats). */
int acn_emu_selftest(const char *name, float *out_host, size_t n);
#endif
#endif

#ifdef __cplusplus
}
#endif
#endif
