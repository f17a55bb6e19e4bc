/* net.cu: the whole AlexNet on the GPU (acn_cuda_net).
 *
 * The weights go up once, into one allocation. A forward copies the batch in, runs
 * every layer on the net's own non-blocking stream with the activations in a
 * persistent device workspace (two ping-pong buffers sized for the largest
 * activation, grown when a bigger N, H, W comes), and copies the logits out: no host
 * round trip between layers.
 *
 * At batch 1 the 12 to 14 launches cost a good share of the time (a few microseconds
 * each against ~0.1 ms of arithmetic), so the layer sequence of a fixed (N, H, W) is
 * captured into a CUDA graph and replayed. The first call with a new shape runs plain
 * launches (which also loads the kernels and fills the tile-choice caches outside any
 * capture); the second captures. A capture that fails leaves the plain launches in
 * charge for that shape. ALEXNET_C_CUDA_GRAPHS=0 turns graphs off.
 *
 * One mutex per net: the workspace and the graph are shared state, so two host
 * threads calling net_forward_cuda on one net take turns.
 *
 * ALEXNET_C_CUDA_PROFILE=1 (read when a net is created; for benchmarks/bench_gpu.py
 * --per-layer): that net runs plain launches with a CUDA event after every layer and
 * prints one line per layer and forward to stderr,
 *   alexnet_c.cuda.layer <name> N=<n> H=<h> W=<w> ms=<time>
 */
#include <limits.h>
#include <mutex>
#include <new>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

namespace {

constexpr int kPoolK = 3, kPoolS = 2;   /* every AlexNet max-pool: 3x3, stride 2 */
constexpr int kAvgOut = 6;              /* AdaptiveAvgPool2d((6, 6)) */
constexpr size_t kAlignFloats = 64;     /* 256 bytes: float4 loads, whole cache lines */

size_t round_up(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

/* Sizes of one forward, walked the same way run_layers walks the layers. */
struct Plan {
    size_t in_floats, act_floats, logits_floats;
};

struct Workspace {
    float *in, *act[2], *logits;
};

/* Per-layer GPU times for ALEXNET_C_CUDA_PROFILE: an event before the first layer and
 * one after each. Best effort: a failing event call only loses the timing. */
class LayerClock {
public:
    explicit LayerClock(cudaStream_t stream) : stream_(stream) {}
    LayerClock(const LayerClock &) = delete;
    LayerClock &operator=(const LayerClock &) = delete;
    ~LayerClock() {
        for (int i = 0; i < n_; ++i) (void)cudaEventDestroy(events_[i]);
        (void)cudaGetLastError();
    }
    void mark(const char *name) {
        if (n_ == kMax) return;
        if (cudaEventCreate(&events_[n_]) != cudaSuccess) {
            (void)cudaGetLastError();
            return;
        }
        names_[n_] = name;
        /* A failed record only loses this layer's time (report prints -1); cleared, or
         * the next layer's check_launch would report it as that kernel's failure. */
        if (cudaEventRecord(events_[n_], stream_) != cudaSuccess) (void)cudaGetLastError();
        ++n_;
    }
    /* After the stream has been synchronised. */
    void report(int N, int H, int W) const {
        for (int i = 1; i < n_; ++i) {
            float ms = -1.f;
            if (cudaEventElapsedTime(&ms, events_[i - 1], events_[i]) != cudaSuccess) ms = -1.f;
            fprintf(stderr, "alexnet_c.cuda.layer %s N=%d H=%d W=%d ms=%.6f\n", names_[i], N, H,
                    W, ms);
        }
        (void)cudaGetLastError();
    }

private:
    static constexpr int kMax = 16;
    cudaStream_t stream_;
    cudaEvent_t events_[kMax] = {};
    const char *names_[kMax] = {};
    int n_ = 0;
};

}  // namespace

struct acn_cuda_net {
    int variant = 0;
    int num_classes = 0;
    acn_variant_spec spec{};
    int device = 0;
    cudaStream_t stream = nullptr;
    float *weight_mem = nullptr;                  /* all 16 arrays, 256-byte aligned */
    const float *w[ACN_NUM_WEIGHTS] = {};
    float *work = nullptr;                        /* input | act[0] | act[1] | logits */
    size_t work_floats = 0;
    bool use_graphs = true;
    bool profile = false;                         /* ALEXNET_C_CUDA_PROFILE */
    acn::Precision precision = acn::Precision::Float32;   /* of the convs and FC GEMMs */
    cudaGraphExec_t graph = nullptr;              /* for shape (g_n, g_h, g_w) */
    bool graph_failed = false;                    /* capture failed for the last shape */
    int last_n = 0, last_h = 0, last_w = 0;       /* shape of the previous forward */
    long captures = 0, replays = 0;               /* graphs made and launched, for tests */
    std::mutex lock;
};

namespace {

using acn::cuda_fail;
using acn::cuda_fail_msg;

/* Element counts of the 16 weight arrays, in state-dict order. */
void weight_sizes(const acn_variant_spec &s, int num_classes, size_t sizes[ACN_NUM_WEIGHTS]) {
    for (int i = 0; i < ACN_NUM_CONV; ++i) {
        const acn_conv_spec &c = s.conv[i];
        sizes[2 * i] = (size_t)c.out_c * c.in_c * c.k * c.k;
        sizes[2 * i + 1] = (size_t)c.out_c;
    }
    sizes[10] = (size_t)s.fc_hidden * s.fc_in;
    sizes[11] = (size_t)s.fc_hidden;
    sizes[12] = (size_t)s.fc_hidden * s.fc_hidden;
    sizes[13] = (size_t)s.fc_hidden;
    sizes[14] = (size_t)num_classes * s.fc_hidden;
    sizes[15] = (size_t)num_classes;
}

int conv_out(int n, int k, int s, int p) { return (int)acn_out_size(n, k, s, p, 1); }

acn_status plan_forward(const acn_cuda_net *net, int N, int H, int W, Plan *plan) {
    const acn_variant_spec &s = net->spec;
    /* The kernels take N * channels as an int (pools) and N * OH * OW (convs). */
    int widest = s.fc_hidden > net->num_classes ? s.fc_hidden : net->num_classes;
    for (int i = 0; i < ACN_NUM_CONV; ++i)
        if (s.conv[i].out_c > widest) widest = s.conv[i].out_c;
    if ((long long)N * widest > INT_MAX || (long long)N * H * W > INT_MAX)
        return cuda_fail_msg(ACN_EINVAL,
                             "AlexNet: batch %d of %dx%d is too large for the GPU kernels", N, H, W);
    size_t act = 0;
    int c = s.conv[0].in_c, h = H, w = W;
    for (int i = 0; i < ACN_NUM_CONV; ++i) {
        const acn_conv_spec &cs = s.conv[i];
        h = conv_out(h, cs.k, cs.stride, cs.pad);
        w = conv_out(w, cs.k, cs.stride, cs.pad);
        c = cs.out_c;
        if (h < 1 || w < 1) break;
        if ((size_t)N * c * h * w > act) act = (size_t)N * c * h * w;
        if (cs.pool_after) {
            h = conv_out(h, kPoolK, kPoolS, 0);
            w = conv_out(w, kPoolK, kPoolS, 0);
            if (h < 1 || w < 1) break;
        }
    }
    if (h < 1 || w < 1)
        return cuda_fail_msg(ACN_EINVAL, "AlexNet: input %dx%d is too small for the features",
                             H, W);
    if (s.avgpool) {
        if (h != kAvgOut || w != kAvgOut) {
            const size_t pooled = (size_t)N * c * kAvgOut * kAvgOut;
            if (pooled > act) act = pooled;
        }
    } else if (h != kAvgOut || w != kAvgOut) {
        return cuda_fail_msg(ACN_EINVAL,
                             "AlexNet (%s): the features must end 6x6 (input 227x227), "
                             "input %dx%d ends %dx%d",
                             net->variant == ACN_VARIANT_ORIGINAL ? "original" : "no avg-pool",
                             H, W, h, w);
    }
    if ((size_t)N * s.fc_hidden > act) act = (size_t)N * s.fc_hidden;
    if (s.log_softmax && (size_t)N * net->num_classes > act) act = (size_t)N * net->num_classes;
    plan->in_floats = (size_t)N * s.conv[0].in_c * H * W;
    plan->act_floats = act;
    plan->logits_floats = (size_t)N * net->num_classes;
    return ACN_OK;
}

size_t workspace_floats(const Plan &p) {
    return round_up(p.in_floats) + 2 * round_up(p.act_floats) + round_up(p.logits_floats);
}

Workspace carve(float *work, const Plan &p) {
    Workspace ws;
    ws.in = work;
    ws.act[0] = ws.in + round_up(p.in_floats);
    ws.act[1] = ws.act[0] + round_up(p.act_floats);
    ws.logits = ws.act[1] + round_up(p.act_floats);
    return ws;
}

/* Every layer, on net->stream. Each output goes to the ping-pong buffer that does not
 * hold the layer's input. The shapes follow plan_forward's walk. */
acn_status run_layers(const acn_cuda_net *net, const Workspace &ws, int N, int H, int W,
                      LayerClock *clock = nullptr) {
    static const char *const conv_names[ACN_NUM_CONV] = {"conv1", "conv2", "conv3", "conv4",
                                                         "conv5"};
    static const char *const pool_names[ACN_NUM_CONV] = {"pool1", "pool2", "pool3", "pool4",
                                                         "pool5"};
    const acn_variant_spec &s = net->spec;
    const cudaStream_t st = net->stream;
    const float *x = ws.in;
    int next = 0;
    auto take = [&]() { float *y = ws.act[next]; next ^= 1; return y; };
    auto mark = [&](const char *name) { if (clock) clock->mark(name); };
    mark("start");

    int c = s.conv[0].in_c, h = H, w = W;
    for (int i = 0; i < ACN_NUM_CONV; ++i) {
        const acn_conv_spec &cs = s.conv[i];
        float *y = take();
        ACN_TRY(acn::conv2d_forward_cuda(y, x, net->w[2 * i], net->w[2 * i + 1], N, c, h, w,
                                         cs.out_c, cs.k, cs.k, cs.stride, cs.stride, cs.pad,
                                         cs.pad, 1, 1, 1, /*relu=*/1, net->precision, st));
        mark(conv_names[i]);
        x = y;
        c = cs.out_c;
        h = conv_out(h, cs.k, cs.stride, cs.pad);
        w = conv_out(w, cs.k, cs.stride, cs.pad);
        if (cs.pool_after) {
            const int ph = conv_out(h, kPoolK, kPoolS, 0), pw = conv_out(w, kPoolK, kPoolS, 0);
            y = take();
            ACN_TRY(acn::max_pool2d_forward_cuda(y, nullptr, x, N * c, h, w, kPoolK, kPoolK,
                                                 kPoolS, kPoolS, 0, 0, 1, 1, ph, pw, st));
            mark(pool_names[i]);
            x = y;
            h = ph;
            w = pw;
        }
    }
    /* A 6x6 map through AdaptiveAvgPool2d((6, 6)) is itself (windows of one element). */
    if (s.avgpool && (h != kAvgOut || w != kAvgOut)) {
        float *y = take();
        ACN_TRY(acn::adaptive_avg_pool2d_forward_cuda(y, x, N * c, h, w, kAvgOut, kAvgOut, st));
        mark("avgpool");
        x = y;
    }
    /* Flatten is free: (N, C, 6, 6) is already (N, 9216) in memory. Dropout is identity. */
    float *y = take();
    ACN_TRY(acn::linear_forward_cuda(y, x, net->w[10], net->w[11], N, s.fc_in, s.fc_hidden, 1,
                                     net->precision, st));
    mark("fc1");
    x = y;
    y = take();
    ACN_TRY(acn::linear_forward_cuda(y, x, net->w[12], net->w[13], N, s.fc_hidden, s.fc_hidden,
                                     1, net->precision, st));
    mark("fc2");
    x = y;
    y = s.log_softmax ? take() : ws.logits;
    ACN_TRY(acn::linear_forward_cuda(y, x, net->w[14], net->w[15], N, s.fc_hidden,
                                     net->num_classes, 0, net->precision, st));
    mark("fc3");
    if (s.log_softmax) {
        ACN_TRY(acn::log_softmax_forward_cuda(ws.logits, y, (size_t)N, (size_t)net->num_classes,
                                              1, st));
        mark("log_softmax");
    }
    return ACN_OK;
}

void drop_graph(acn_cuda_net *net) {
    if (net->graph) (void)cudaGraphExecDestroy(net->graph);
    net->graph = nullptr;
    (void)cudaGetLastError();   /* not left for the next check_launch to blame on a kernel */
}

/* Records run_layers into net->graph. On any failure the error is cleared and
 * graph_failed set: the caller runs plain launches, which report a real error if
 * there is one. */
void capture_graph(acn_cuda_net *net, const Workspace &ws, int N, int H, int W) {
    cudaGraph_t graph = nullptr;
    /* Thread-local mode: other host threads' allocations (other nets, the op calls)
     * stay legal while this thread captures. */
    if (cudaStreamBeginCapture(net->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        net->graph_failed = true;
        return;
    }
    const acn_status st = run_layers(net, ws, N, H, W);
    const cudaError_t end = cudaStreamEndCapture(net->stream, &graph);
    cudaGraphExec_t exec = nullptr;
    if (st == ACN_OK && end == cudaSuccess && graph &&
        /* The WithFlags form: cudaGraphInstantiate's arguments differ between CUDA 11
         * and 12, this one is the same from 11.4 on. */
        cudaGraphInstantiateWithFlags(&exec, graph, 0) == cudaSuccess) {
        net->graph = exec;
        ++net->captures;
    } else {
        net->graph_failed = true;
    }
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
}

/* An unset variable gives dflt; "0", "off", "false" turn off, anything else on. */
bool env_flag(const char *name, bool dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return !(strcmp(v, "0") == 0 || strcmp(v, "off") == 0 || strcmp(v, "false") == 0);
}

/* Makes a device current for this thread for one scope and then gives the
 * caller's back: torch and our static runtime share the driver's current
 * device, and a forward on GPU 1 must not leave torch's thread on GPU 1.
 * (A no-op with one GPU.) */
class DeviceScope {
  public:
    explicit DeviceScope(int device) {
        if (cudaGetDevice(&prev_) != cudaSuccess) {
            prev_ = -1;
            (void)cudaGetLastError();
        }
        if (prev_ != device) status_ = cudaSetDevice(device);
    }
    ~DeviceScope() {
        int cur = -1;
        if (prev_ >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev_) (void)cudaSetDevice(prev_);
        /* A failure here only leaves the caller's device unrestored; cleared, or the
         * caller's next check_launch would blame it on its own kernel. */
        if (prev_ >= 0) (void)cudaGetLastError();
    }
    DeviceScope(const DeviceScope &) = delete;
    DeviceScope &operator=(const DeviceScope &) = delete;
    cudaError_t status() const { return status_; }

  private:
    int prev_ = -1;
    cudaError_t status_ = cudaSuccess;
};

void release(acn_cuda_net *net) {
    drop_graph(net);
    if (net->stream) {
        (void)cudaStreamSynchronize(net->stream);
        (void)cudaStreamDestroy(net->stream);
    }
    (void)cudaFree(net->work);
    (void)cudaFree(net->weight_mem);
    /* Also swallows cudaErrorCudartUnloading when this runs at interpreter exit. */
    (void)cudaGetLastError();
    delete net;
}

acn_status create(acn_cuda_net *net, const float *const weights[ACN_NUM_WEIGHTS]) {
    ACN_CUDA_TRY(cudaGetDevice(&net->device), "cudaGetDevice");
    ACN_CUDA_TRY(cudaStreamCreateWithFlags(&net->stream, cudaStreamNonBlocking),
                 "cudaStreamCreate");
    size_t sizes[ACN_NUM_WEIGHTS], offsets[ACN_NUM_WEIGHTS], total = 0;
    weight_sizes(net->spec, net->num_classes, sizes);
    for (int i = 0; i < ACN_NUM_WEIGHTS; ++i) {
        offsets[i] = total;
        total += round_up(sizes[i]);
    }
    void *mem = nullptr;
    ACN_CUDA_TRY(cudaMalloc(&mem, total * sizeof(float)), "AlexNet weights on the GPU");
    net->weight_mem = static_cast<float *>(mem);
    for (int i = 0; i < ACN_NUM_WEIGHTS; ++i) {
        net->w[i] = net->weight_mem + offsets[i];
        ACN_CUDA_TRY(cudaMemcpyAsync(net->weight_mem + offsets[i], weights[i],
                                     sizes[i] * sizeof(float), cudaMemcpyHostToDevice,
                                     net->stream),
                     "copy of the weights to the GPU");
    }
    ACN_CUDA_TRY(cudaStreamSynchronize(net->stream), "copy of the weights to the GPU");
    (void)acn::sm_count();   /* cached now, outside any graph capture */
    return ACN_OK;
}

/* forward's work on net->stream: input copy, layers (graph or launches), result copy. */
acn_status run_and_download(acn_cuda_net *net, const Workspace &ws, const Plan &plan,
                            float *out_host, const float *inp_host, int N, int H, int W) {
    ACN_CUDA_TRY(cudaMemcpyAsync(ws.in, inp_host, plan.in_floats * sizeof(float),
                                 cudaMemcpyHostToDevice, net->stream),
                 "copy of the input to the GPU");
    if (net->profile) {
        LayerClock clock(net->stream);
        ACN_TRY(run_layers(net, ws, N, H, W, &clock));
        ACN_TRY(acn::download_and_wait(out_host, ws.logits, plan.logits_floats, net->stream));
        clock.report(N, H, W);
        return ACN_OK;
    }
    if (net->graph) {
        ACN_CUDA_TRY(cudaGraphLaunch(net->graph, net->stream), "cudaGraphLaunch");
        ++net->replays;
    } else
        ACN_TRY(run_layers(net, ws, N, H, W));
    return acn::download_and_wait(out_host, ws.logits, plan.logits_floats, net->stream);
}

acn_status forward(acn_cuda_net *net, float *out_host, const float *inp_host, int N, int H,
                   int W) {
    DeviceScope device(net->device);
    ACN_CUDA_TRY(device.status(), "cudaSetDevice");
    Plan plan{};
    ACN_TRY(plan_forward(net, N, H, W, &plan));

    const size_t need = workspace_floats(plan);
    if (need > net->work_floats) {
        /* Every forward ends with a stream sync, a failed one too (wait_if_failed), so
         * nothing still reads the old one. */
        drop_graph(net);
        (void)cudaFree(net->work);
        (void)cudaGetLastError();   /* a failed free loses nothing; not left for check_launch */
        net->work = nullptr;
        net->work_floats = 0;
        void *mem = nullptr;
        ACN_CUDA_TRY(cudaMalloc(&mem, need * sizeof(float)), "AlexNet workspace on the GPU");
        net->work = static_cast<float *>(mem);
        net->work_floats = need;
        net->last_n = 0;   /* new buffers: the next capture must see them */
    }
    const Workspace ws = carve(net->work, plan);

    const bool same_shape = N == net->last_n && H == net->last_h && W == net->last_w;
    if (!same_shape) {
        drop_graph(net);
        net->graph_failed = false;
        net->last_n = N;
        net->last_h = H;
        net->last_w = W;
    } else if (net->use_graphs && !net->graph && !net->graph_failed) {
        capture_graph(net, ws, N, H, W);
    }

    /* A failure part way leaves the input copy and the layers before it running on the
     * workspace, which the next forward may free or overwrite: wait for them. */
    return acn::wait_if_failed(run_and_download(net, ws, plan, out_host, inp_host, N, H, W),
                               net->stream);
}

}  // namespace

extern "C" acn_cuda_net *net_create_cuda(int variant, int num_classes,
                                         const float *const weights[ACN_NUM_WEIGHTS],
                                         int *status) {
    int dummy;
    if (!status) status = &dummy;
    const acn_variant_spec *spec = acn_variant(variant);
    if (!spec || num_classes < 1 || !weights) {
        *status = cuda_fail_msg(ACN_EINVAL, "net_create_cuda: unknown variant %d or %d classes",
                                variant, num_classes);
        return nullptr;
    }
    for (int i = 0; i < ACN_NUM_WEIGHTS; ++i) {
        if (!weights[i]) {
            *status = cuda_fail_msg(ACN_EINVAL, "net_create_cuda: weight %d is NULL", i);
            return nullptr;
        }
    }
    if ((long long)spec->conv[ACN_NUM_CONV - 1].out_c * kAvgOut * kAvgOut != spec->fc_in) {
        *status = cuda_fail_msg(ACN_EINVAL, "net_create_cuda: fc_in %d does not match conv5",
                                spec->fc_in);
        return nullptr;
    }
    acn_cuda_net *net = new (std::nothrow) acn_cuda_net;
    if (!net) {
        *status = cuda_fail_msg(ACN_ENOMEM, "net_create_cuda: out of host memory");
        return nullptr;
    }
    net->variant = variant;
    net->num_classes = num_classes;
    net->spec = *spec;
    net->profile = env_flag("ALEXNET_C_CUDA_PROFILE", false);
    net->use_graphs = env_flag("ALEXNET_C_CUDA_GRAPHS", true) && !net->profile;
    *status = create(net, weights);
    if (*status != ACN_OK) {
        release(net);
        return nullptr;
    }
    return net;
}

extern "C" void net_destroy_cuda(acn_cuda_net *net) {
    if (!net) return;
    DeviceScope device(net->device);
    {
        /* Waits for a forward still running on another thread. */
        std::lock_guard<std::mutex> guard(net->lock);
    }
    release(net);
}

extern "C" int net_forward_cuda(acn_cuda_net *net, float *out_host, const float *inp_host,
                                int N, int H, int W) {
    if (!net || !out_host || !inp_host || N < 1 || H < 1 || W < 1)
        return cuda_fail_msg(ACN_EINVAL, "net_forward_cuda: invalid arguments (N=%d H=%d W=%d)",
                             N, H, W);
    std::lock_guard<std::mutex> guard(net->lock);
    return forward(net, out_host, inp_host, N, H, W);
}

extern "C" int net_set_tf32_cuda(acn_cuda_net *net, int tf32) {
    if (!net) return cuda_fail_msg(ACN_EINVAL, "net_set_tf32_cuda: no net");
    std::lock_guard<std::mutex> guard(net->lock);
    DeviceScope device(net->device);
    ACN_CUDA_TRY(device.status(), "cudaSetDevice");
    const acn::Precision want = tf32 ? acn::Precision::Tf32 : acn::Precision::Float32;
    if (tf32) ACN_TRY(acn::check_tf32("AlexNet.to"));
    if (want != net->precision) {
        /* The captured graph holds the other kernels. */
        drop_graph(net);
        net->graph_failed = false;
        net->last_n = 0;
        net->precision = want;
    }
    return ACN_OK;
}

extern "C" void net_cuda_graph_counts(acn_cuda_net *net, long counts[2]) {
    std::lock_guard<std::mutex> guard(net->lock);
    counts[0] = net->captures;
    counts[1] = net->replays;
}
