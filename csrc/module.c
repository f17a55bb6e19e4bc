/* alexnet_c._C: the only file that sees Python.h and NumPy.
 *
 * It turns arguments into float32 C-contiguous arrays (copying only when it
 * must, never writing to an input), checks shapes with messages that name the
 * expected and the actual shape, allocates outputs, releases the GIL around
 * every kernel, and turns status codes into exceptions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "alexnet_c.h"

enum { DEV_CPU = 0, DEV_CUDA = 1 };

static PyObject *CudaOutOfMemoryError;

/* ---- argument and error helpers --------------------------------------- */

/* New reference to an array view of obj (no copy for an ndarray); NULL with
 * TypeError when obj is not a real-valued array-like. */
static PyArrayObject *as_real_array(PyObject *obj, const char *op, const char *name)
{
    PyArrayObject *any = (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
    if (any == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be a real-valued array, got %.100s",
                     op, name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    const char kind = PyArray_DESCR(any)->kind;
    if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f') {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a real-valued array (bool, int or float), got dtype %S",
                     op, name, (PyObject *)PyArray_DESCR(any));
        Py_DECREF(any);
        return NULL;
    }
    return any;
}

static int is_float32_carray(PyArrayObject *a)
{
    return PyArray_TYPE(a) == NPY_FLOAT32 && PyArray_ISCARRAY_RO(a) && PyArray_ISNOTSWAPPED(a);
}

/* Steals `any`; new reference to a float32, aligned, C-contiguous view or copy. */
static PyArrayObject *to_float32(PyArrayObject *any)
{
    PyArrayObject *f = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)any, NPY_FLOAT32,
                                                         NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED |
                                                             NPY_ARRAY_FORCECAST);
    Py_DECREF(any);
    return f;
}

/* New reference to a float32, aligned, C-contiguous view or copy of obj. The
 * input is never written to: a view is only read. */
static PyArrayObject *as_float32(PyObject *obj, const char *op, const char *name)
{
    PyArrayObject *any = as_real_array(obj, op, name);
    return any ? to_float32(any) : NULL;
}

/* a*b with overflow saturating at SIZE_MAX. */
static size_t mul_size(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t add_size(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

static int require_memory(size_t bytes, const char *op)
{
    if (acn_fits_in_memory(bytes))
        return 0;
    PyErr_Format(PyExc_MemoryError, "%s: needs %zu bytes, more than this machine's memory", op, bytes);
    return -1;
}

static PyObject *shape_tuple(PyArrayObject *a)
{
    const int nd = PyArray_NDIM(a);
    PyObject *t = PyTuple_New(nd);
    for (int i = 0; t && i < nd; i++)
        PyTuple_SET_ITEM(t, i, PyLong_FromSsize_t(PyArray_DIM(a, i)));
    return t;
}

/* ValueError "<msg> got <what> of shape (..)". */
static void shape_error(const char *msg, const char *what, PyArrayObject *a)
{
    PyObject *shape = shape_tuple(a);
    if (shape == NULL)
        return;
    PyErr_Format(PyExc_ValueError, "%s, got %s of shape %R", msg, what, shape);
    Py_DECREF(shape);
}

/* "<what> (KH, KW) is larger than the padded input (HP, WP)", the dilated form saying
 * what the window spans, for a window that does not fit its input. */
static void window_too_large(char *msg, size_t len, const char *what, int KH, int KW, int DH, int DW,
                             long long HP, long long WP)
{
    if (DH == 1 && DW == 1)
        snprintf(msg, len, "%s (%d, %d) is larger than the padded input (%lld, %lld)", what, KH, KW, HP, WP);
    else
        snprintf(msg, len, "%s (%d, %d) with dilation (%d, %d) spans (%lld, %lld), more than the padded "
                 "input (%lld, %lld)", what, KH, KW, DH, DW, acn_dilated_span(KH, DH), acn_dilated_span(KW, DW),
                 HP, WP);
}

static int require_ndim(PyArrayObject *a, int nd, const char *op, const char *name, const char *layout)
{
    if (PyArray_NDIM(a) == nd)
        return 0;
    char msg[200];
    snprintf(msg, sizeof msg, "%s: expected %s to be %d-D %s", op, name, nd, layout);
    shape_error(msg, name, a);
    return -1;
}

static int fits_int(npy_intp v) { return v >= 0 && v <= INT_MAX; }

static int dims_fit_int(PyArrayObject *a, const char *op, const char *name)
{
    for (int i = 0; i < PyArray_NDIM(a); i++) {
        if (!fits_int(PyArray_DIM(a, i))) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s: every dimension of %s must be below 2**31", op, name);
            shape_error(msg, name, a);
            return -1;
        }
    }
    return 0;
}

static PyObject *raise_status(int st, const char *op)
{
    switch (st) {
    case ACN_ENOMEM:
        return PyErr_Format(PyExc_MemoryError, "%s: not enough memory for this input", op);
    case ACN_EINVAL:
        return PyErr_Format(PyExc_ValueError, "%s: sizes the kernel cannot handle", op);
#ifdef ALEXNET_C_WITH_CUDA
    case ACN_ECUDA_OOM:
        return PyErr_Format(CudaOutOfMemoryError, "%s: CUDA out of memory: %s", op, cuda_last_error());
    case ACN_ECUDA:
        return PyErr_Format(PyExc_RuntimeError, "%s: CUDA error: %s", op, cuda_last_error());
#endif
#ifdef ALEXNET_C_WITH_CUDA
    case ACN_EUNSUPPORTED:
        return PyErr_Format(PyExc_RuntimeError, "%s: %s", op, cuda_last_error());
#endif
    case ACN_ENODEV:
#ifdef ALEXNET_C_WITH_CUDA
        return PyErr_Format(PyExc_RuntimeError, "%s: no usable CUDA device: %s", op, cuda_last_error());
#else
        return PyErr_Format(PyExc_RuntimeError, "%s: no usable CUDA device", op);
#endif
    default:
        return PyErr_Format(PyExc_RuntimeError, "%s: kernel failed with status %d", op, st);
    }
}

/* raise_status for a status that came from a CUDA call: adds the CUDA side's text. */
static PyObject *raise_cuda_status(int st, const char *op)
{
#ifdef ALEXNET_C_WITH_CUDA
    if (st == ACN_EINVAL)
        return PyErr_Format(PyExc_ValueError, "%s: %s", op, cuda_last_error());
#endif
    return raise_status(st, op);
}

/* 0 when precision code `tf32` fits `device`; else -1 with ValueError. */
static int check_precision(int tf32, int device, const char *op)
{
    if (!tf32 || device == DEV_CUDA)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s: precision='tf32' is a CUDA tensor-core mode; on the CPU "
                 "alexnet_c computes in float32 (use precision='float32' or device='cuda')", op);
    return -1;
}

/* 0 when `device` can run now; else -1 with RuntimeError saying why. */
static int check_device(int device, const char *op)
{
    if (device == DEV_CPU)
        return 0;
    if (device != DEV_CUDA) {
        PyErr_Format(PyExc_ValueError, "%s: unknown device code %d", op, device);
        return -1;
    }
#ifdef ALEXNET_C_WITH_CUDA
    char why[256] = "";
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cuda_available(why, sizeof why);
    Py_END_ALLOW_THREADS
    if (ok)
        return 0;
    PyErr_Format(PyExc_RuntimeError, "%s: CUDA is not available: %s", op, why);
#else
    PyErr_Format(PyExc_RuntimeError,
                 "%s: CUDA is not available: alexnet_c was built without CUDA "
                 "(nvcc was not found at build time; reinstall with ALEXNET_C_CUDA=1)", op);
#endif
    return -1;
}

/* A fresh float32 output; MemoryError up front when it could never fit. */
static PyArrayObject *new_output(int nd, const npy_intp *dims)
{
    size_t bytes = sizeof(float);
    for (int i = 0; i < nd; i++)
        bytes = mul_size(bytes, (size_t)dims[i]);
    if (require_memory(bytes, "output"))
        return NULL;
    return (PyArrayObject *)PyArray_SimpleNew(nd, (npy_intp *)dims, NPY_FLOAT32);
}

static const float *fdata(PyArrayObject *a) { return a ? (const float *)PyArray_DATA(a) : NULL; }

/* ---- ops ----------------------------------------------------------------- */

static PyObject *py_conv2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *w_obj, *b_obj;
    int SH, SW, PH, PW, DH, DW, groups, device, naive, tf32 = 0;
    if (!PyArg_ParseTuple(args, "OOOiiiiiiiip|p", &x_obj, &w_obj, &b_obj, &SH, &SW, &PH, &PW, &DH, &DW, &groups,
                          &device, &naive, &tf32))
        return NULL;
    const char *op = "conv2d";
    if (check_precision(tf32, device, op))
        return NULL;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    if (!(x = as_float32(x_obj, op, "input")) || !(w = as_float32(w_obj, op, "weight")))
        goto fail;
    if (b_obj != Py_None && !(b = as_float32(b_obj, op, "bias")))
        goto fail;
    if (require_ndim(x, 4, op, "input", "(N, C, H, W)") || require_ndim(w, 4, op, "weight", "(OC, C/groups, KH, KW)")
        || dims_fit_int(x, op, "input") || dims_fit_int(w, op, "weight"))
        goto fail;
    if (SH < 1 || SW < 1 || PH < 0 || PW < 0 || DH < 1 || DW < 1 || groups < 1) {
        PyErr_Format(PyExc_ValueError, "conv2d: expected stride >= 1, padding >= 0, dilation >= 1 and "
                     "groups >= 1, got stride (%d, %d), padding (%d, %d), dilation (%d, %d), groups %d",
                     SH, SW, PH, PW, DH, DW, groups);
        goto fail;
    }
    const int N = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1), H = (int)PyArray_DIM(x, 2),
              W = (int)PyArray_DIM(x, 3);
    const int OC = (int)PyArray_DIM(w, 0), Cg = (int)PyArray_DIM(w, 1), KH = (int)PyArray_DIM(w, 2),
              KW = (int)PyArray_DIM(w, 3);
    if (OC < 1 || Cg < 1 || KH < 1 || KW < 1 || OC % groups) {
        char msg[200];
        snprintf(msg, sizeof msg, "conv2d: expected a non-empty weight (OC, C/groups, KH, KW) with OC "
                 "divisible by groups=%d", groups);
        shape_error(msg, "weight", w);
        goto fail;
    }
    /* The GEMM's K, one output channel's taps, counts in int. */
    if ((long long)Cg * KH * KW > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "conv2d: expected at most 2**31-1 weights per output channel "
                     "(C/groups*KH*KW), got %d*%d*%d", Cg, KH, KW);
        goto fail;
    }
    if ((long long)Cg * groups != C) {
        PyObject *ws = shape_tuple(w), *xs = shape_tuple(x);
        if (ws && xs)
            PyErr_Format(PyExc_ValueError, "conv2d: expected input with %lld channels (weight shape %R, "
                         "groups=%d), got input of shape %R", (long long)Cg * groups, ws, groups, xs);
        Py_XDECREF(ws);
        Py_XDECREF(xs);
        goto fail;
    }
    if (b && (PyArray_NDIM(b) != 1 || PyArray_DIM(b, 0) != OC)) {
        char msg[120];
        snprintf(msg, sizeof msg, "conv2d: expected bias of shape (%d,)", OC);
        shape_error(msg, "bias", b);
        goto fail;
    }
    const long long OH = acn_out_size(H, KH, SH, PH, DH), OW = acn_out_size(W, KW, SW, PW, DW);
    if (OH < 1 || OW < 1) {
        char msg[240];
        window_too_large(msg, sizeof msg, "conv2d: kernel", KH, KW, DH, DW, H + 2LL * PH, W + 2LL * PW);
        shape_error(msg, "input", x);
        goto fail;
    }
    if ((long long)H + 2LL * PH > INT_MAX || (long long)W + 2LL * PW > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "conv2d: padded input must stay below 2**31");
        goto fail;
    }
    /* OH*OW < 2**62 here, and N*OH*OW could wrap when C = 0 leaves the input empty. */
    if (N > 0 && OH * OW > INT_MAX / N) {
        PyErr_Format(PyExc_ValueError, "conv2d: expected at most 2**31-1 output pixels in the batch "
                     "(N*OH*OW), got %d*%lld*%lld", N, OH, OW);
        goto fail;
    }
    /* The CPU kernel reads a zero-padded copy of the input: count it too. */
    const size_t padded = mul_size(mul_size((size_t)N * (size_t)C, (size_t)H + 2 * (size_t)PH),
                                   (size_t)W + 2 * (size_t)PW + (size_t)SW);
    if (require_memory(mul_size(add_size(padded, mul_size((size_t)N * OC, (size_t)OH * OW)), sizeof(float)), op))
        goto fail;
    const npy_intp dims[4] = {N, OC, OH, OW};
    if (!(out = new_output(4, dims)) || check_device(device, op))
        goto fail;
    if (PyArray_SIZE(out) > 0) {
        int st;
        Py_BEGIN_ALLOW_THREADS
#ifdef ALEXNET_C_WITH_CUDA
        if (device == DEV_CUDA)
            st = conv2d_host_cuda((float *)PyArray_DATA(out), fdata(x), fdata(w), fdata(b), N, C, H, W, OC,
                                  KH, KW, SH, SW, PH, PW, DH, DW, groups, 0, tf32);
        else
#endif
            st = (naive ? conv2d_forward_naive : conv2d_forward_cpu)(
                (float *)PyArray_DATA(out), fdata(x), fdata(w), fdata(b), N, C, H, W, OC, KH, KW, SH, SW, PH,
                PW, DH, DW, groups, 0, NULL);
        Py_END_ALLOW_THREADS
        if (st != ACN_OK) {
            (device == DEV_CUDA ? raise_cuda_status : raise_status)(st, op);
            goto fail;
        }
    }
    Py_DECREF(x);
    Py_DECREF(w);
    Py_XDECREF(b);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return NULL;
}

/* The ops' Python layer looks at shapes (unbatched inputs, 'same' padding) before the
 * kernels are called; it asks here first so that a complex, string or object input is
 * the same TypeError whichever path it takes. Returns the array as NumPy sees it. */
static PyObject *py_real_array(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj;
    const char *op, *name;
    if (!PyArg_ParseTuple(args, "Oss", &obj, &op, &name))
        return NULL;
    return (PyObject *)as_real_array(obj, op, name);
}

static PyObject *py_relu(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj;
    int device;
    if (!PyArg_ParseTuple(args, "Oi", &x_obj, &device))
        return NULL;
    PyArrayObject *x = as_float32(x_obj, "relu", "input"), *out = NULL;
    if (x == NULL || check_device(device, "relu"))
        goto fail;
    if (!(out = new_output(PyArray_NDIM(x), PyArray_DIMS(x))))
        goto fail;
    const size_t n = (size_t)PyArray_SIZE(x);
    int st = ACN_OK;
    if (n > 0) {
        Py_BEGIN_ALLOW_THREADS
#ifdef ALEXNET_C_WITH_CUDA
        if (device == DEV_CUDA)
            st = relu_host_cuda((float *)PyArray_DATA(out), fdata(x), n);
        else
#endif
            st = relu_forward_cpu((float *)PyArray_DATA(out), fdata(x), n);
        Py_END_ALLOW_THREADS
    }
    if (st != ACN_OK) {
        (device == DEV_CUDA ? raise_cuda_status : raise_status)(st, "relu");
        goto fail;
    }
    Py_DECREF(x);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

static long long floor_div(long long a, long long b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* PyTorch's pooling output size, ceil_mode's last window must start inside
 * the input or the left padding. */
static long long pool_out_size(long long in, int k, int s, int p, int d, int ceil_mode)
{
    long long out = floor_div(in + 2LL * p - acn_dilated_span(k, d) + (ceil_mode ? s - 1 : 0), s) + 1;
    if (ceil_mode && (out - 1) * s >= in + p)
        out--;
    return out;
}

static PyObject *py_max_pool2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj;
    int KH, KW, SH, SW, PH, PW, DH, DW, ceil_mode, with_indices, device;
    if (!PyArg_ParseTuple(args, "Oiiiiiiiippi", &x_obj, &KH, &KW, &SH, &SW, &PH, &PW, &DH, &DW, &ceil_mode,
                          &with_indices, &device))
        return NULL;
    const char *op = "max_pool2d";
    PyArrayObject *x = as_float32(x_obj, op, "input"), *out = NULL, *idx = NULL;
    if (x == NULL || require_ndim(x, 4, op, "input", "(N, C, H, W)") || dims_fit_int(x, op, "input"))
        goto fail;
    if (KH < 1 || KW < 1 || SH < 1 || SW < 1 || PH < 0 || PW < 0 || DH < 1 || DW < 1) {
        PyErr_Format(PyExc_ValueError, "max_pool2d: expected kernel_size >= 1, stride >= 1, padding >= 0 and "
                     "dilation >= 1, got kernel_size (%d, %d), stride (%d, %d), padding (%d, %d), dilation (%d, %d)",
                     KH, KW, SH, SW, PH, PW, DH, DW);
        goto fail;
    }
    /* PyTorch's rule, on the kernel size whatever the dilation. */
    if (PH > KH / 2 || PW > KW / 2) {
        PyErr_Format(PyExc_ValueError, "max_pool2d: padding must be at most half the kernel size, "
                     "got padding (%d, %d) for kernel_size (%d, %d)", PH, PW, KH, KW);
        goto fail;
    }
    /* A window one tap wide has no second tap to space out: its dilation would only
     * step the kernels' loop variable far past the plane (and past INT_MAX). */
    if (KH == 1)
        DH = 1;
    if (KW == 1)
        DW = 1;
    const int N = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1), H = (int)PyArray_DIM(x, 2),
              W = (int)PyArray_DIM(x, 3);
    if ((long long)N * C > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "max_pool2d: expected at most 2**31-1 planes (N*C), got %lld",
                     (long long)N * C);
        goto fail;
    }
    const long long OH = pool_out_size(H, KH, SH, PH, DH, ceil_mode), OW = pool_out_size(W, KW, SW, PW, DW, ceil_mode);
    if (OH < 1 || OW < 1) {
        char window[240], msg[400];
        window_too_large(window, sizeof window, "the window", KH, KW, DH, DW, H + 2LL * PH, W + 2LL * PW);
        snprintf(msg, sizeof msg, "max_pool2d: output size would be (%lld, %lld), expected at least (1, 1): %s",
                 OH, OW, window);
        shape_error(msg, "input", x);
        goto fail;
    }
    /* An even window padded by half of it at stride 1 gives one output pixel more than the
     * input has: 2**31 for a 2**31-1 wide input, past the kernels' int sizes. */
    if (OH > INT_MAX || OW > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "max_pool2d: expected an output size of at most 2**31-1 each way, "
                     "got (%lld, %lld)", OH, OW);
        goto fail;
    }
    const npy_intp dims[4] = {N, C, (npy_intp)OH, (npy_intp)OW};
    if (with_indices) {
        /* Both outputs must fit, checked before either is made. */
        const size_t n_out = mul_size(mul_size((size_t)N * (size_t)C, (size_t)OH), (size_t)OW);
        if (require_memory(mul_size(n_out, sizeof(float) + sizeof(int64_t)), op))
            goto fail;
    }
    if (!(out = new_output(4, dims)) || check_device(device, op))
        goto fail;
    if (with_indices && !(idx = (PyArrayObject *)PyArray_SimpleNew(4, (npy_intp *)dims, NPY_INT64)))
        goto fail;
    int64_t *idata = idx ? (int64_t *)PyArray_DATA(idx) : NULL;
    int st = ACN_OK;
    if (PyArray_SIZE(out) > 0) {
        Py_BEGIN_ALLOW_THREADS
#ifdef ALEXNET_C_WITH_CUDA
        if (device == DEV_CUDA)
            st = max_pool2d_host_cuda((float *)PyArray_DATA(out), idata, fdata(x), N * C, H, W, KH, KW, SH, SW,
                                      PH, PW, DH, DW, (int)OH, (int)OW);
        else
#endif
            st = max_pool2d_forward_cpu((float *)PyArray_DATA(out), idata, fdata(x), N * C, H, W, KH, KW, SH, SW,
                                        PH, PW, DH, DW, (int)OH, (int)OW);
        Py_END_ALLOW_THREADS
    }
    if (st != ACN_OK) {
        (device == DEV_CUDA ? raise_cuda_status : raise_status)(st, op);
        goto fail;
    }
    Py_DECREF(x);
    if (idx)
        return Py_BuildValue("(NN)", (PyObject *)out, (PyObject *)idx);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(out);
    Py_XDECREF(idx);
    return NULL;
}

static PyObject *py_adaptive_avg_pool2d(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj;
    int OH, OW, device;
    if (!PyArg_ParseTuple(args, "Oiii", &x_obj, &OH, &OW, &device))
        return NULL;
    const char *op = "adaptive_avg_pool2d";
    PyArrayObject *x = as_float32(x_obj, op, "input"), *out = NULL;
    if (x == NULL || require_ndim(x, 4, op, "input", "(N, C, H, W)") || dims_fit_int(x, op, "input"))
        goto fail;
    if (OH < 0 || OW < 0) {
        PyErr_Format(PyExc_ValueError, "adaptive_avg_pool2d: expected output_size >= (0, 0), got (%d, %d)", OH, OW);
        goto fail;
    }
    const int N = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1), H = (int)PyArray_DIM(x, 2),
              W = (int)PyArray_DIM(x, 3);
    if ((long long)N * C > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "adaptive_avg_pool2d: expected at most 2**31-1 planes (N*C), got %lld",
                     (long long)N * C);
        goto fail;
    }
    if (H < 1 || W < 1) {
        shape_error("adaptive_avg_pool2d: expected input with non-empty H and W", "input", x);
        goto fail;
    }
    const npy_intp dims[4] = {N, C, OH, OW};
    if (!(out = new_output(4, dims)) || check_device(device, op))
        goto fail;
    int st = ACN_OK;
    if (PyArray_SIZE(out) > 0) {
        Py_BEGIN_ALLOW_THREADS
#ifdef ALEXNET_C_WITH_CUDA
        if (device == DEV_CUDA)
            st = adaptive_avg_pool2d_host_cuda((float *)PyArray_DATA(out), fdata(x), N * C, H, W, OH, OW);
        else
#endif
            st = adaptive_avg_pool2d_forward_cpu((float *)PyArray_DATA(out), fdata(x), N * C, H, W, OH, OW);
        Py_END_ALLOW_THREADS
    }
    if (st != ACN_OK) {
        (device == DEV_CUDA ? raise_cuda_status : raise_status)(st, op);
        goto fail;
    }
    Py_DECREF(x);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *py_linear(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *w_obj, *b_obj;
    int device, naive, tf32 = 0;
    if (!PyArg_ParseTuple(args, "OOOip|p", &x_obj, &w_obj, &b_obj, &device, &naive, &tf32))
        return NULL;
    const char *op = "linear";
    if (check_precision(tf32, device, op))
        return NULL;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    if (!(x = as_float32(x_obj, op, "input")) || !(w = as_float32(w_obj, op, "weight")))
        goto fail;
    if (b_obj != Py_None && !(b = as_float32(b_obj, op, "bias")))
        goto fail;
    if (require_ndim(x, 2, op, "input", "(N, in_features)") || require_ndim(w, 2, op, "weight", "(out_features, in_features)")
        || dims_fit_int(x, op, "input") || dims_fit_int(w, op, "weight"))
        goto fail;
    const int N = (int)PyArray_DIM(x, 0), In = (int)PyArray_DIM(x, 1), O = (int)PyArray_DIM(w, 0);
    if (PyArray_DIM(w, 1) != In) {
        char msg[160];
        snprintf(msg, sizeof msg, "linear: expected input with last dimension %lld (weight shape (%d, %lld))",
                 (long long)PyArray_DIM(w, 1), O, (long long)PyArray_DIM(w, 1));
        shape_error(msg, "input", x);
        goto fail;
    }
    if (b && (PyArray_NDIM(b) != 1 || PyArray_DIM(b, 0) != O)) {
        char msg[120];
        snprintf(msg, sizeof msg, "linear: expected bias of shape (%d,)", O);
        shape_error(msg, "bias", b);
        goto fail;
    }
    const npy_intp dims[2] = {N, O};
    if (!(out = new_output(2, dims)) || check_device(device, op))
        goto fail;
    int st = ACN_OK;
    if (PyArray_SIZE(out) > 0) {
        Py_BEGIN_ALLOW_THREADS
#ifdef ALEXNET_C_WITH_CUDA
        if (device == DEV_CUDA)
            st = linear_host_cuda((float *)PyArray_DATA(out), fdata(x), fdata(w), fdata(b), N, In, O, 0, tf32);
        else
#endif
            st = (naive ? linear_forward_naive : linear_forward_cpu)((float *)PyArray_DATA(out), fdata(x), fdata(w),
                                                                     fdata(b), N, In, O, 0);
        Py_END_ALLOW_THREADS
    }
    if (st != ACN_OK) {
        (device == DEV_CUDA ? raise_cuda_status : raise_status)(st, op);
        goto fail;
    }
    Py_DECREF(x);
    Py_DECREF(w);
    Py_XDECREF(b);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *py_softmax(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *dim_obj;
    int log_form, device;
    if (!PyArg_ParseTuple(args, "OO!pi", &x_obj, &PyLong_Type, &dim_obj, &log_form, &device))
        return NULL;
    const char *op = log_form ? "log_softmax" : "softmax";
    PyArrayObject *x = as_float32(x_obj, op, "input"), *out = NULL;
    if (x == NULL)
        goto fail;
    const int nd = PyArray_NDIM(x), span = nd > 0 ? nd : 1;
    /* Any Python int is a dim: one past the C range is as out of range as 5 for a 2-D
       input, and the message quotes it whole. */
    int overflow = 0;
    long long dim = PyLong_AsLongLongAndOverflow(dim_obj, &overflow);
    if (dim == -1 && !overflow && PyErr_Occurred())
        goto fail;
    if (overflow || dim < -span || dim >= span) {
        PyErr_Format(PyExc_IndexError, "%s: dim %S out of range for a %d-D input (expected %d..%d)",
                     op, dim_obj, nd, -span, span - 1);
        goto fail;
    }
    if (dim < 0)
        dim += span;
    size_t outer = 1, D = 1, inner = 1;
    for (int i = 0; i < nd; i++) {
        const size_t d = (size_t)PyArray_DIM(x, i);
        if (i < dim) outer *= d;
        else if (i == dim) D = d;
        else inner *= d;
    }
    if (!(out = new_output(nd, PyArray_DIMS(x))) || check_device(device, op))
        goto fail;
    int st = ACN_OK;
    if (PyArray_SIZE(out) > 0) {
        Py_BEGIN_ALLOW_THREADS
#ifdef ALEXNET_C_WITH_CUDA
        if (device == DEV_CUDA)
            st = (log_form ? log_softmax_host_cuda : softmax_host_cuda)((float *)PyArray_DATA(out), fdata(x),
                                                                       outer, D, inner);
        else
#endif
            st = (log_form ? log_softmax_forward_cpu : softmax_forward_cpu)((float *)PyArray_DATA(out), fdata(x),
                                                                           outer, D, inner);
        Py_END_ALLOW_THREADS
    }
    if (st != ACN_OK) {
        (device == DEV_CUDA ? raise_cuda_status : raise_status)(st, op);
        goto fail;
    }
    Py_DECREF(x);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

/* ---- the Net type: a whole AlexNet held by C --------------------------- */

typedef struct {
    PyObject_HEAD
    acn_net *cpu;
#ifdef ALEXNET_C_WITH_CUDA
    acn_cuda_net *cuda;
    int cuda_users;      /* forwards running on `cuda` without the GIL; it is freed only at 0 */
#endif
    int variant, num_classes, device;
    int tf32;            /* the CUDA net multiplies in TF32 (set by to_device) */
    PyObject *weights;   /* tuple of the 16 float32 arrays the C net points into */
} NetObject;

static void expected_weight_shape(const acn_variant_spec *s, int num_classes, int i, npy_intp *dims, int *nd)
{
    if (i < 2 * ACN_NUM_CONV) {
        const acn_conv_spec *c = &s->conv[i / 2];
        if (i % 2 == 0) {
            dims[0] = c->out_c; dims[1] = c->in_c; dims[2] = c->k; dims[3] = c->k;
            *nd = 4;
        } else {
            dims[0] = c->out_c;
            *nd = 1;
        }
        return;
    }
    const int l = (i - 2 * ACN_NUM_CONV) / 2;
    const int in = l == 0 ? s->fc_in : s->fc_hidden, outf = l == 2 ? num_classes : s->fc_hidden;
    if (i % 2 == 0) {
        dims[0] = outf; dims[1] = in;
        *nd = 2;
    } else {
        dims[0] = outf;
        *nd = 1;
    }
}

static int Net_init(NetObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"variant", "num_classes", "weights", NULL};
    int variant, num_classes;
    PyObject *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiO", kwlist, &variant, &num_classes, &seq))
        return -1;
    if (self->cpu) {
        PyErr_SetString(PyExc_RuntimeError, "Net is already initialised");
        return -1;
    }
    const acn_variant_spec *s = acn_variant(variant);
    if (s == NULL || num_classes < 1) {
        PyErr_Format(PyExc_ValueError, "Net: unknown variant %d or num_classes %d < 1", variant, num_classes);
        return -1;
    }
    PyObject *tuple = PySequence_Tuple(seq);
    if (tuple == NULL)
        return -1;
    if (PyTuple_GET_SIZE(tuple) != ACN_NUM_WEIGHTS) {
        PyErr_Format(PyExc_ValueError, "Net: expected %d weight arrays, got %zd", ACN_NUM_WEIGHTS,
                     PyTuple_GET_SIZE(tuple));
        Py_DECREF(tuple);
        return -1;
    }
    const float *ptrs[ACN_NUM_WEIGHTS];
    for (int i = 0; i < ACN_NUM_WEIGHTS; i++) {
        PyObject *o = PyTuple_GET_ITEM(tuple, i);
        npy_intp dims[4];
        int nd;
        expected_weight_shape(s, num_classes, i, dims, &nd);
        /* The net keeps pointers into these arrays: they must be float32,
         * C-contiguous and aligned already; no silent copy that could die. */
        if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != NPY_FLOAT32
            || !PyArray_ISCARRAY_RO((PyArrayObject *)o) || !PyArray_ISNOTSWAPPED((PyArrayObject *)o)
            || PyArray_NDIM((PyArrayObject *)o) != nd
            || memcmp(PyArray_DIMS((PyArrayObject *)o), dims, (size_t)nd * sizeof(npy_intp)) != 0) {
            PyErr_Format(PyExc_ValueError, "Net: weight %d must be a float32 C-contiguous array of the "
                         "layer's shape", i);
            Py_DECREF(tuple);
            return -1;
        }
        ptrs[i] = (const float *)PyArray_DATA((PyArrayObject *)o);
    }
    int st;
    acn_net *net = net_create_cpu(variant, num_classes, ptrs, &st);
    if (net == NULL) {
        Py_DECREF(tuple);
        raise_status(st, "Net");
        return -1;
    }
    /* PySequence_Tuple can run Python code (a generator of weights) that initialised
     * this Net meanwhile: the first one stays, this one is dropped. */
    if (self->cpu) {
        net_destroy_cpu(net);
        Py_DECREF(tuple);
        PyErr_SetString(PyExc_RuntimeError, "Net is already initialised");
        return -1;
    }
    self->cpu = net;
    self->variant = variant;
    self->num_classes = num_classes;
    self->device = DEV_CPU;
    self->weights = tuple;
    return 0;
}

static void Net_dealloc(NetObject *self)
{
    net_destroy_cpu(self->cpu);
#ifdef ALEXNET_C_WITH_CUDA
    if (self->cuda)
        net_destroy_cuda(self->cuda);
#endif
    Py_XDECREF(self->weights);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int net_ready(NetObject *self)
{
    if (self->cpu)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Net was not initialised");
    return -1;
}

/* The forward pass; with seconds != NULL (CPU only) each stage is timed. */
static PyObject *net_forward_impl(NetObject *self, PyObject *x_obj, double *seconds)
{
    if (net_ready(self))
        return NULL;
    const char *op = "AlexNet";
    /* Shapes and memory are checked on a view first: a batch too big for this
     * machine raises MemoryError before any float32 copy of it is made. */
    PyArrayObject *x = as_real_array(x_obj, op, "input"), *out = NULL;
    if (x == NULL)
        return NULL;
    const int nd = PyArray_NDIM(x);
    if ((nd != 3 && nd != 4) || PyArray_DIM(x, nd - 3) != 3) {
        shape_error("AlexNet: expected input of shape (N, 3, H, W) or (3, H, W)", "input", x);
        goto fail;
    }
    if (dims_fit_int(x, op, "input"))
        goto fail;
    const int N = nd == 4 ? (int)PyArray_DIM(x, 0) : 1, H = (int)PyArray_DIM(x, nd - 2),
              W = (int)PyArray_DIM(x, nd - 1);
    int FH, FW;
    net_feature_size(self->variant, H, W, &FH, &FW);
    if (self->variant == ACN_VARIANT_ORIGINAL && (FH != 6 || FW != 6)) {
        shape_error("original AlexNet: expected 227x227 input, (N, 3, 227, 227) (any H and W from 227 to 258 "
                    "give its 6x6 last feature map)", "input", x);
        goto fail;
    }
    if (FH < 1 || FW < 1) {
        shape_error("torchvision AlexNet: expected input of at least 63x63, (N, 3, H, W) with H, W >= 63",
                    "input", x);
        goto fail;
    }
    size_t need = mul_size(net_arena_floats(self->cpu, N, H, W), sizeof(float));
    if (!is_float32_carray(x))
        need = add_size(need, mul_size(mul_size((size_t)N * 3, (size_t)H * W), sizeof(float)));
    if (require_memory(need, op))
        goto fail;
    if ((x = to_float32(x)) == NULL)
        return NULL;
    const npy_intp dims[2] = {N, self->num_classes};
    if (!(out = new_output(2, dims)))
        goto fail;
    if (N > 0) {
        int st;
#ifdef ALEXNET_C_WITH_CUDA
        if (self->device == DEV_CUDA) {
            /* Another thread may call to("cpu") while this one runs without the
             * GIL: the net stays alive until the last forward using it is done. */
            acn_cuda_net *cnet = self->cuda;
            self->cuda_users++;
            Py_BEGIN_ALLOW_THREADS
            st = net_forward_cuda(cnet, (float *)PyArray_DATA(out), fdata(x), N, H, W);
            Py_END_ALLOW_THREADS
            if (--self->cuda_users == 0 && self->device != DEV_CUDA && self->cuda == cnet) {
                net_destroy_cuda(cnet);
                self->cuda = NULL;
            }
        } else
#endif
        {
            Py_BEGIN_ALLOW_THREADS
            st = net_forward_cpu_timed(self->cpu, (float *)PyArray_DATA(out), fdata(x), N, H, W, seconds);
            Py_END_ALLOW_THREADS
        }
        if (st != ACN_OK) {
            (self->device == DEV_CUDA ? raise_cuda_status : raise_status)(st, op);
            goto fail;
        }
    }
    Py_DECREF(x);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *Net_forward(NetObject *self, PyObject *x_obj)
{
    return net_forward_impl(self, x_obj, NULL);
}

static PyObject *Net_profile(NetObject *self, PyObject *x_obj)
{
    static const char *const names[ACN_NUM_STAGES] = {
        [ACN_STAGE_CONV1] = "conv1", [ACN_STAGE_POOL1] = "pool1", [ACN_STAGE_CONV2] = "conv2",
        [ACN_STAGE_POOL2] = "pool2", [ACN_STAGE_CONV3] = "conv3", [ACN_STAGE_CONV4] = "conv4",
        [ACN_STAGE_CONV5] = "conv5", [ACN_STAGE_POOL5] = "pool5", [ACN_STAGE_AVGPOOL] = "avgpool",
        [ACN_STAGE_FC1] = "fc1", [ACN_STAGE_FC2] = "fc2", [ACN_STAGE_FC3] = "fc3",
        [ACN_STAGE_LOG_SOFTMAX] = "log_softmax"};
    if (self->device != DEV_CPU) {
        PyErr_SetString(PyExc_RuntimeError,
                        "AlexNet.profile: per-stage times are measured on the CPU path; move the model with "
                        ".to('cpu') first (for CUDA set ALEXNET_C_CUDA_PROFILE=1)");
        return NULL;
    }
    double seconds[ACN_NUM_STAGES] = {0};   /* an empty batch runs no stage and sets none */
    PyObject *out = net_forward_impl(self, x_obj, seconds);
    if (out == NULL)
        return NULL;
    PyObject *times = PyList_New(0);
    for (int i = 0; times != NULL && i < ACN_NUM_STAGES; i++) {
        if (seconds[i] <= 0.0 && (i == ACN_STAGE_AVGPOOL || i == ACN_STAGE_LOG_SOFTMAX))
            continue;   /* stages this variant or input size does not run */
        PyObject *item = Py_BuildValue("(sd)", names[i], seconds[i]);
        if (item == NULL || PyList_Append(times, item) < 0)
            Py_CLEAR(times);
        Py_XDECREF(item);
    }
    if (times == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(NN)", out, times);
}

static PyObject *Net_to_device(NetObject *self, PyObject *args)
{
    int device, tf32 = 0;
    if (net_ready(self) || !PyArg_ParseTuple(args, "i|p", &device, &tf32))
        return NULL;
    if (check_precision(tf32, device, "AlexNet.to") || check_device(device, "AlexNet.to"))
        return NULL;
#ifdef ALEXNET_C_WITH_CUDA
    acn_cuda_net *created = NULL;
    if (device == DEV_CUDA && self->cuda == NULL) {
        const float *ptrs[ACN_NUM_WEIGHTS];
        for (int i = 0; i < ACN_NUM_WEIGHTS; i++)
            ptrs[i] = fdata((PyArrayObject *)PyTuple_GET_ITEM(self->weights, i));
        int st = ACN_OK;
        acn_cuda_net *net;
        Py_BEGIN_ALLOW_THREADS
        net = net_create_cuda(self->variant, self->num_classes, ptrs, &st);
        Py_END_ALLOW_THREADS
        if (net == NULL)
            return raise_cuda_status(st == ACN_OK ? ACN_ECUDA : st, "AlexNet.to");
        if (self->cuda != NULL)   /* another thread's to("cuda") finished first */
            net_destroy_cuda(net);
        else
            self->cuda = created = net;
    }
    if (device == DEV_CUDA) {
        /* Like a forward: the net stays alive while this runs without the GIL. */
        acn_cuda_net *cnet = self->cuda;
        int st;
        self->cuda_users++;
        Py_BEGIN_ALLOW_THREADS
        st = net_set_tf32_cuda(cnet, tf32);
        Py_END_ALLOW_THREADS
        self->cuda_users--;
        if (st != ACN_OK) {
            /* A failed move leaves the model where it was. */
            if (self->cuda == cnet && self->cuda_users == 0 &&
                (cnet == created || self->device != DEV_CUDA)) {
                net_destroy_cuda(cnet);
                self->cuda = NULL;
            }
            return raise_cuda_status(st, "AlexNet.to");
        }
    } else if (device == DEV_CPU && self->cuda && self->cuda_users == 0) {
        net_destroy_cuda(self->cuda);
        self->cuda = NULL;
    }
#endif
    self->device = device;
    self->tf32 = tf32;
    Py_RETURN_NONE;
}

static PyObject *Net_get_weights(NetObject *self, void *closure)
{
    (void)closure;
    if (net_ready(self))
        return NULL;
    Py_INCREF(self->weights);
    return self->weights;
}

static PyObject *Net_get_device(NetObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->device);
}

static PyObject *Net_get_tf32(NetObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->tf32);
}

static PyObject *Net_arena_bytes(NetObject *self, PyObject *args)
{
    int N, H, W;
    if (net_ready(self) || !PyArg_ParseTuple(args, "iii", &N, &H, &W))
        return NULL;
    const size_t floats = net_arena_floats(self->cpu, N, H, W);
    return PyLong_FromSize_t(floats == SIZE_MAX ? SIZE_MAX : floats * sizeof(float));
}

/* (captures, replays) of the CUDA graph of the whole forward; (0, 0) on the CPU. */
static PyObject *Net_cuda_graph_counts(NetObject *self, PyObject *Py_UNUSED(ignored))
{
    long counts[2] = {0, 0};
    if (net_ready(self))
        return NULL;
#ifdef ALEXNET_C_WITH_CUDA
    if (self->cuda != NULL)
        net_cuda_graph_counts(self->cuda, counts);
#endif
    return Py_BuildValue("(ll)", counts[0], counts[1]);
}

static PyMethodDef Net_methods[] = {
    {"forward", (PyCFunction)Net_forward, METH_O, "forward(x) -> (N, num_classes) float32"},
    {"profile", (PyCFunction)Net_profile, METH_O,
     "profile(x) -> (output, [(stage, seconds), ...]): the CPU forward with each stage timed"},
    {"to_device", (PyCFunction)Net_to_device, METH_VARARGS,
     "to_device(0 cpu | 1 cuda, tf32=False): tf32 on CUDA only"},
    {"arena_bytes", (PyCFunction)Net_arena_bytes, METH_VARARGS, "activation memory for (N, H, W)"},
    {"cuda_graph_counts", (PyCFunction)Net_cuda_graph_counts, METH_NOARGS,
     "cuda_graph_counts() -> (graphs captured, forwards replayed from a graph)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Net_getset[] = {
    {"weights", (getter)Net_get_weights, NULL, "the 16 weight arrays, in state-dict order", NULL},
    {"device", (getter)Net_get_device, NULL, "0 cpu, 1 cuda", NULL},
    {"tf32", (getter)Net_get_tf32, NULL, "True when the CUDA net multiplies in TF32", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject NetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "alexnet_c._C.Net",
    .tp_basicsize = sizeof(NetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Net(variant, num_classes, weights): an AlexNet whose forward pass runs in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Net_init,
    .tp_dealloc = (destructor)Net_dealloc,
    .tp_methods = Net_methods,
    .tp_getset = Net_getset,
};

/* ---- module-level settings -------------------------------------------- */

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    /* True would be one thread, as an int; refused, as torch refuses it. */
    if (PyBool_Check(arg) || !PyIndex_Check(arg))
        return PyErr_Format(PyExc_TypeError, "set_num_threads: expected an int, got %.100s", Py_TYPE(arg)->tp_name);
    int overflow = 0;
    const long n = PyLong_AsLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || n < 1 || n > 4096)
        return PyErr_Format(PyExc_ValueError, "set_num_threads: expected 1..4096 threads, got %S", arg);
    acn_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(acn_get_num_threads());
}

static PyObject *py_cuda_status(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
#ifdef ALEXNET_C_WITH_CUDA
    char why[256] = "";
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cuda_available(why, sizeof why);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("Os", ok ? Py_True : Py_False, ok ? "" : why);
#else
    return Py_BuildValue("Os", Py_False, "alexnet_c was built without CUDA (nvcc was not found at build time)");
#endif
}

#ifdef ALEXNET_C_CUDA_EMULATED
/* _emu_selftest(name, n) -> float32 array of n: one of csrc/cuda_emu/selftest.cu's
 * kernels, for the tests of the emulator itself. */
static PyObject *py_emu_selftest(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "sn", &name, &n))
        return NULL;
    if (n < 1 || n > (1 << 24)) {
        PyErr_Format(PyExc_ValueError, "_emu_selftest: n must be in [1, 2**24], got %zd", n);
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)n};
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_FLOAT32, 0);
    if (out == NULL)
        return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = acn_emu_selftest(name, (float *)PyArray_DATA(out), (size_t)n);
    Py_END_ALLOW_THREADS
    if (st != ACN_OK) {
        Py_DECREF(out);
        return raise_cuda_status(st, "_emu_selftest");
    }
    return (PyObject *)out;
}
#endif

static PyObject *py_get_isa(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("ss", acn_isa_name(acn_active_isa()), acn_isa_name(acn_best_isa()));
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL)
        return NULL;
    for (int isa = ACN_ISA_GENERIC; isa <= ACN_ISA_AVX512; isa++) {
        if (strcmp(name, acn_isa_name((acn_isa)isa)) == 0) {
            if (acn_set_isa((acn_isa)isa) != ACN_OK)
                return PyErr_Format(PyExc_ValueError, "set_isa: this CPU does not support %s (best: %s)", name,
                                    acn_isa_name(acn_best_isa()));
            Py_RETURN_NONE;
        }
    }
    return PyErr_Format(PyExc_ValueError, "set_isa: expected 'generic', 'avx2' or 'avx512', got %R", arg);
}

static PyObject *py_get_winograd(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyUnicode_FromString(acn_wino_mode_name(acn_get_winograd()));
}

static PyObject *py_set_winograd(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL)
        return NULL;
    for (int m = ACN_WINO_OFF; m <= ACN_WINO_AUTO; m++) {
        if (strcmp(name, acn_wino_mode_name((acn_wino_mode)m)) == 0) {
            acn_set_winograd((acn_wino_mode)m);
            Py_RETURN_NONE;
        }
    }
    return PyErr_Format(PyExc_ValueError, "set_winograd: expected 'off', 'on' or 'auto', got %R", arg);
}

static PyObject *py_winograd_applies(PyObject *self, PyObject *args)
{
    (void)self;
    int k, n, oh, ow;
    if (!PyArg_ParseTuple(args, "iiii", &k, &n, &oh, &ow))
        return NULL;
    return PyBool_FromLong(acn_wino_would_apply(k, k, 1, 1, n, oh, ow));
}

static PyObject *py_measure_fma_peak(PyObject *self, PyObject *args)
{
    (void)self;
    int nt;
    double seconds;
    if (!PyArg_ParseTuple(args, "id", &nt, &seconds))
        return NULL;
    if (nt < 1 || seconds <= 0)
        return PyErr_Format(PyExc_ValueError, "measure_fma_peak: expected threads >= 1 and seconds > 0");
    double gflops;
    Py_BEGIN_ALLOW_THREADS
    gflops = acn_measure_fma_peak(nt, seconds);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(gflops);
}

static PyObject *py_measure_read_bw(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj;
    int reps, nt;
    if (!PyArg_ParseTuple(args, "Oii", &obj, &reps, &nt))
        return NULL;
    if (reps < 1 || nt < 1)
        return PyErr_Format(PyExc_ValueError, "measure_read_bw: expected reps >= 1 and threads >= 1");
    PyArrayObject *buf = as_float32(obj, "measure_read_bw", "buffer");
    if (buf == NULL)
        return NULL;
    double gbs;
    Py_BEGIN_ALLOW_THREADS
    gbs = acn_measure_read_bw(fdata(buf), (size_t)PyArray_SIZE(buf), reps, nt);
    Py_END_ALLOW_THREADS
    Py_DECREF(buf);
    return PyFloat_FromDouble(gbs);
}

static PyMethodDef module_methods[] = {
    {"conv2d", py_conv2d, METH_VARARGS, "conv2d(x, w, b, sh, sw, ph, pw, dh, dw, groups, device, naive[, tf32])"},
    {"relu", py_relu, METH_VARARGS, "relu(x, device)"},
    {"real_array", py_real_array, METH_VARARGS, "real_array(x, op, name): x as an array; TypeError unless bool, int or float"},
    {"max_pool2d", py_max_pool2d, METH_VARARGS, "max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, return_indices, device)"},
    {"adaptive_avg_pool2d", py_adaptive_avg_pool2d, METH_VARARGS, "adaptive_avg_pool2d(x, oh, ow, device)"},
    {"linear", py_linear, METH_VARARGS, "linear(x, w, b, device, naive)"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, dim, log, device)"},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"cuda_status", py_cuda_status, METH_NOARGS, "cuda_status() -> (available, reason)"},
#ifdef ALEXNET_C_CUDA_EMULATED
    {"_emu_selftest", py_emu_selftest, METH_VARARGS, "_emu_selftest(name, n): a CUDA emulator self-test kernel"},
#endif
    {"get_isa", py_get_isa, METH_NOARGS, "get_isa() -> (active, best)"},
    {"set_isa", py_set_isa, METH_O, "set_isa('generic' | 'avx2' | 'avx512')"},
    {"get_winograd", py_get_winograd, METH_NOARGS, "get_winograd() -> 'off' | 'on' | 'auto'"},
    {"winograd_applies", py_winograd_applies, METH_VARARGS,
     "winograd_applies(kernel, batch, out_h, out_w) -> bool: would a stride-1 kernel x kernel conv take it now"},
    {"set_winograd", py_set_winograd, METH_O, "set_winograd('off' | 'on' | 'auto'): Winograd F(2x2,3x3) for 3x3 and 5x5 stride-1 convs"},
    {"measure_fma_peak", py_measure_fma_peak, METH_VARARGS, "measure_fma_peak(threads, seconds) -> GFLOP/s"},
    {"measure_read_bw", py_measure_read_bw, METH_VARARGS, "measure_read_bw(float32 array, reps, threads) -> GB/s"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", "alexnet_c's C kernels", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void)
{
    import_array();
    acn_runtime_init();
    if (PyType_Ready(&NetType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    PyObject *bases = PyTuple_Pack(2, PyExc_MemoryError, PyExc_RuntimeError);
    CudaOutOfMemoryError = bases ? PyErr_NewException("alexnet_c.CudaOutOfMemoryError", bases, NULL) : NULL;
    Py_XDECREF(bases);
    Py_INCREF(&NetType);
    if (CudaOutOfMemoryError == NULL || PyModule_AddObject(m, "Net", (PyObject *)&NetType) < 0
        || PyModule_AddObject(m, "CudaOutOfMemoryError", CudaOutOfMemoryError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(CudaOutOfMemoryError);   /* the module took one reference; raise_status uses ours */
#ifdef ALEXNET_C_WITH_CUDA
    PyModule_AddIntConstant(m, "WITH_CUDA", 1);
#else
    PyModule_AddIntConstant(m, "WITH_CUDA", 0);
#endif
#ifdef ALEXNET_C_CUDA_EMULATED
    /* built with ALEXNET_C_CUDA=emulate: "cuda" is csrc/cuda_emu's CPU emulator */
    PyModule_AddIntConstant(m, "CUDA_EMULATED", 1);
#else
    PyModule_AddIntConstant(m, "CUDA_EMULATED", 0);
#endif
    if (acn_isa_env_rejected()
        && PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "ALEXNET_C_ISA=%s is unknown or not supported by this CPU; "
                            "using %s", getenv("ALEXNET_C_ISA"), acn_isa_name(acn_active_isa())) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (acn_wino_env_rejected()
        && PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "ALEXNET_C_WINOGRAD=%s is not one of off, on, auto; using auto",
                            getenv("ALEXNET_C_WINOGRAD")) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
