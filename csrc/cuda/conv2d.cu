/* conv2d.cu: convolution as an implicit GEMM (gemm.cuh, Image loader), bias and ReLU
 * fused in the epilogue. The GEMM reads the input image where the CPU's direct loop
 * would (conv2d_forward_naive):
 *   out[n][oc][oh][ow] = bias[oc] + sum_{c,kh,kw} weight[oc][c][kh][kw]
 *                        * inp[n][g*Cg + c][oh*SH - PH + kh*DH][ow*SW - PW + kw*DW]
 * with g = oc / OCg and zero outside the image.
 */
#include <limits.h>

#include "gemm.cuh"

namespace acn {

acn_status conv2d_forward_cuda(float *out, const float *inp, const float *weight,
                               const float *bias, int N, int C, int H, int W, int OC,
                               int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                               int groups, int relu, Precision precision, cudaStream_t stream) {
    if (N < 0 || C < 1 || H < 1 || W < 1 || OC < 1 || KH < 1 || KW < 1 || SH < 1 || SW < 1 ||
        PH < 0 || PW < 0 || DH < 1 || DW < 1 || groups < 1 || C % groups || OC % groups)
        return cuda_fail_msg(ACN_EINVAL, "conv2d: invalid sizes (C=%d OC=%d groups=%d)", C, OC,
                             groups);
    const long long OH = acn_out_size(H, KH, SH, PH, DH), OW = acn_out_size(W, KW, SW, PW, DW);
    if (OH < 1 || OW < 1)
        return cuda_fail_msg(ACN_EINVAL, "conv2d: kernel %dx%d (dilation %dx%d) larger than the "
                             "padded input", KH, KW, DH, DW);
    if (N == 0) return ACN_OK;
    /* The kernel indexes one image, one output plane set and the pixel count with int;
     * K stops short of INT_MAX (kMaxK) so that its k loop's counter cannot overflow. */
    const long long P = (long long)N * OH * OW;
    if ((long long)C * H * W > INT_MAX || OC * OH * OW > INT_MAX || P > INT_MAX ||
        (long long)(C / groups) * KH * KW > kMaxK)
        return cuda_fail_msg(ACN_EINVAL, "conv2d: sizes too large for the CUDA kernel");

    GemmArgs a;
    a.out = out;
    a.inp = inp;
    a.weight = weight;
    a.bias = bias;
    a.C = C;
    a.H = H;
    a.W = W;
    a.OC = OC;
    a.OHW = (int)(OH * OW);
    a.OW = (int)OW;
    a.KW = KW;
    a.SH = SH;
    a.SW = SW;
    a.PH = PH;
    a.PW = PW;
    a.DH = DH;
    a.DW = DW;
    a.Cg = C / groups;
    a.OCg = OC / groups;
    a.K = a.Cg * KH * KW;
    a.P = (int)P;
    a.relu = relu;
    a.div_khw = FastDiv(KH * KW);
    a.div_kw = FastDiv(KW);
    a.div_ohw = FastDiv(a.OHW);
    a.div_ow = FastDiv(a.OW);
    if (DH == 1 && DW == 1)
        return gemm_tiled<BLoad::Image>(a, groups, precision, stream, "conv2d kernel");
    return gemm_tiled<BLoad::DilatedImage>(a, groups, precision, stream, "conv2d kernel");
}

}  // namespace acn

extern "C" int conv2d_host_cuda(float *out, const float *inp, const float *weight,
                                const float *bias, int N, int C, int H, int W, int OC, int KH,
                                int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                                int groups, int relu, int tf32) {
    using namespace acn;
    if (N < 0 || C < 1 || H < 1 || W < 1 || OC < 1 || KH < 1 || KW < 1 || SH < 1 || SW < 1 ||
        PH < 0 || PW < 0 || DH < 1 || DW < 1 || groups < 1 || C % groups || OC % groups ||
        acn_out_size(H, KH, SH, PH, DH) < 1 || acn_out_size(W, KW, SW, PW, DW) < 1)
        return cuda_fail_msg(ACN_EINVAL, "conv2d: invalid sizes");
    const size_t OH = (size_t)acn_out_size(H, KH, SH, PH, DH), OW = (size_t)acn_out_size(W, KW, SW, PW, DW);
    const size_t n_out = (size_t)N * OC * OH * OW;
    if (n_out == 0) return ACN_OK;
    const Precision precision = tf32 ? Precision::Tf32 : Precision::Float32;
    if (tf32) ACN_TRY(check_tf32("conv2d"));   /* before any copy */
    const cudaStream_t stream = host_call_stream();
    DeviceBuffers mem;
    float *d_inp, *d_weight, *d_bias = nullptr, *d_out;
    ACN_TRY(mem.upload(&d_inp, inp, (size_t)N * C * H * W, stream, "conv2d input"));
    ACN_TRY(mem.upload(&d_weight, weight, (size_t)OC * (C / groups) * KH * KW, stream,
                       "conv2d weight"));
    if (bias) ACN_TRY(mem.upload(&d_bias, bias, (size_t)OC, stream, "conv2d bias"));
    ACN_TRY(mem.alloc(&d_out, n_out, "conv2d output"));
    ACN_TRY(conv2d_forward_cuda(d_out, d_inp, d_weight, d_bias, N, C, H, W, OC, KH, KW, SH, SW,
                                PH, PW, DH, DW, groups, relu, precision, stream));
    return download_and_wait(out, d_out, n_out, stream);
}
