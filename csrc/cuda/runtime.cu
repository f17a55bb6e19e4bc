/* runtime.cu: CUDA availability, error text, and the scratch buffers of the host wrappers.
 *
 * Nothing here may exit or abort: on a machine with no driver, cudart_static answers
 * every call with cudaErrorInsufficientDriver or cudaErrorNoDevice, and the import of
 * the extension must still work.
 */
#include <atomic>
#include <stdarg.h>
#include <stdio.h>

#include "cuda_common.cuh"

namespace acn {

/* One buffer per host thread: the glue reads it right after the failing call, on the
 * same thread, while another thread may be failing in its own way. */
static thread_local char tl_last_error[512];

acn_status cuda_fail(cudaError_t err, const char *what) {
    snprintf(tl_last_error, sizeof tl_last_error, "%s: %s (%s)", what,
             cudaGetErrorString(err), cudaGetErrorName(err));
    /* Resets a non-sticky error (an allocation failure, a bad launch configuration) so
     * that the process goes on; a sticky one (a kernel fault) stays until the context
     * is reset, and every later call reports it again. */
    (void)cudaGetLastError();
    switch (err) {
    case cudaErrorMemoryAllocation:
        return ACN_ECUDA_OOM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
    case cudaErrorNoKernelImageForDevice:
        return ACN_ENODEV;   /* nothing to retry: this machine cannot run the kernels */
    default:
        return ACN_ECUDA;
    }
}

acn_status cuda_fail_msg(acn_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_last_error, sizeof tl_last_error, fmt, ap);
    va_end(ap);
    return status;
}

acn_status check_launch(const char *kernel) {
    cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? ACN_OK : cuda_fail(err, kernel);
}

acn_status wait_if_failed(acn_status status, cudaStream_t stream) {
    if (status != ACN_OK) {
        (void)cudaStreamSynchronize(stream);
        (void)cudaGetLastError();   /* a sticky error stays reported by every later call */
    }
    return status;
}

namespace {

/* One attribute of the current device, cached per device. Plenty of slots for the
 * devices of one host; a device beyond them is queried every time, which is correct,
 * only slower. fallback (< 1 is "unknown") when the query fails; not cached then. */
template <cudaDeviceAttr ATTR>
int cached_attribute(int fallback) {
    static std::atomic<int> cached[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return fallback;
    }
    if (dev >= 0 && dev < 64) {
        const int n = cached[dev].load(std::memory_order_relaxed);
        if (n > 0) return n;
    }
    int n = 0;
    if (cudaDeviceGetAttribute(&n, ATTR, dev) != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        return fallback;
    }
    if (dev >= 0 && dev < 64) cached[dev].store(n, std::memory_order_relaxed);
    return n;
}

/* Built with the same -gencode list as every kernel (setup.py compiles each .cu
 * alike), so the code the driver loads for it is the code it loads for the TF32
 * GEMMs. Never launched. */
__global__ void __launch_bounds__(32) arch_probe_kernel(void) {
}

/* The compute_XY of the device code loaded for this GPU (cudaFuncAttributes::ptxVersion,
 * the way CUB's PtxVersion reads it), cached per device; 0 when the query fails (err). */
int loaded_code_arch(cudaError_t *err) {
    static std::atomic<int> cached[64];
    int dev = 0;
    *err = cudaGetDevice(&dev);
    if (*err != cudaSuccess) return 0;
    const bool slot = dev >= 0 && dev < 64;
    if (slot) {
        const int v = cached[dev].load(std::memory_order_relaxed);
        if (v > 0) return v;
    }
    cudaFuncAttributes attr;
    *err = cudaFuncGetAttributes(&attr, arch_probe_kernel);
    if (*err != cudaSuccess || attr.ptxVersion < 1) return 0;
    if (slot) cached[dev].store(attr.ptxVersion, std::memory_order_relaxed);
    return attr.ptxVersion;
}

}  // namespace

int sm_count(void) {
    return cached_attribute<cudaDevAttrMultiProcessorCount>(80);   /* 80 only steers the tile choice */
}

acn_status check_tf32(const char *what) {
    int major = cached_attribute<cudaDevAttrComputeCapabilityMajor>(0);
    if (major < 1) {   /* the query failed: ask again for its error */
        int dev = 0;
        cudaError_t err = cudaGetDevice(&dev);
        if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        if (err != cudaSuccess) return cuda_fail(err, what);
    }
    const int minor = cached_attribute<cudaDevAttrComputeCapabilityMinor>(0);
    /* No `what` in the texts: the Python error already starts with the op's name. */
    if (major < 8)
        return cuda_fail_msg(ACN_EUNSUPPORTED,
                             "precision='tf32' needs TF32 tensor cores (compute capability 8.0 "
                             "or newer, Ampere and later); this GPU is %d.%d",
                             major, minor);
    /* A build whose newest code for this GPU is an older arch's PTX (say
     * ALEXNET_C_CUDA_ARCHS=75 on an H200) has TF32 kernels without a body there: the
     * driver would run them and leave the output unwritten. */
    cudaError_t err = cudaSuccess;
    const int arch = loaded_code_arch(&err);
    if (arch < 1) return cuda_fail(err != cudaSuccess ? err : cudaErrorUnknown, what);
    if (arch < 80)
        return cuda_fail_msg(ACN_EUNSUPPORTED,
                             "precision='tf32' needs device code built for compute capability 8.0 "
                             "or newer; this build runs compute_%d code on this GPU (%d.%d): "
                             "rebuild with ALEXNET_C_CUDA_ARCHS including %d%d",
                             arch, major, minor, major, minor);
    return ACN_OK;
}

DeviceBuffers::~DeviceBuffers() {
    if (queued_) (void)cudaStreamSynchronize(stream_);   /* already idle after a success */
    for (int i = 0; i < n_; ++i) (void)cudaFree(ptrs_[i]);
    (void)cudaGetLastError();
}

acn_status DeviceBuffers::alloc_bytes(void **ptr, size_t count, size_t size, const char *what) {
    *ptr = nullptr;
    if (count == 0) return ACN_OK;
    if (n_ == 4) return cuda_fail_msg(ACN_EINVAL, "%s: too many scratch buffers", what);
    if (count > SIZE_MAX / size)
        return cuda_fail_msg(ACN_ECUDA_OOM, "%s: %zu elements of %zu bytes do not fit in memory",
                             what, count, size);
    void *p = nullptr;
    ACN_CUDA_TRY(cudaMalloc(&p, count * size), what);
    ptrs_[n_++] = p;
    *ptr = p;
    return ACN_OK;
}

acn_status DeviceBuffers::upload(float **ptr, const float *host, size_t count,
                                 cudaStream_t stream, const char *what) {
    ACN_TRY(alloc(ptr, count, what));
    stream_ = stream;
    queued_ = true;
    if (count)
        ACN_CUDA_TRY(cudaMemcpyAsync(*ptr, host, count * sizeof(float), cudaMemcpyHostToDevice,
                                     stream),
                     what);
    return ACN_OK;
}

acn_status download_and_wait(float *host, const float *dev, size_t count, cudaStream_t stream) {
    if (count)
        ACN_CUDA_TRY(cudaMemcpyAsync(host, dev, count * sizeof(float), cudaMemcpyDeviceToHost,
                                     stream),
                     "copy of the result to the host");
    ACN_CUDA_TRY(cudaStreamSynchronize(stream), "CUDA kernel");
    return ACN_OK;
}

}  // namespace acn

extern "C" const char *cuda_last_error(void) { return acn::tl_last_error; }

extern "C" int cuda_available(char *why, size_t why_len) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    char text[384];
    if (err == cudaSuccess && count >= 1) {
        text[0] = '\0';
    } else if (err == cudaSuccess) {
        snprintf(text, sizeof text, "no CUDA device found");
    } else if (err == cudaErrorInsufficientDriver || err == cudaErrorStubLibrary) {
        /* The same code means "no driver at all" and "a driver older than the runtime
         * this was built with": say both. */
        snprintf(text, sizeof text,
                 "no CUDA driver found (or one older than this build's CUDA %d.%d runtime): %s",
                 CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10, cudaGetErrorString(err));
    } else if (err == cudaErrorNoDevice) {
        snprintf(text, sizeof text, "no CUDA device found: %s", cudaGetErrorString(err));
    } else {
        snprintf(text, sizeof text, "CUDA is not usable: %s (%s)", cudaGetErrorString(err),
                 cudaGetErrorName(err));
    }
    (void)cudaGetLastError();
    if (why && why_len) snprintf(why, why_len, "%s", text);
    return err == cudaSuccess && count >= 1;
}
