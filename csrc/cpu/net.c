/* The whole AlexNet forward pass on the CPU, in one call from Python.
 *
 * Activations ping-pong between two halves of one arena that the net keeps and
 * grows as needed, so a steady stream of calls allocates nothing. */
#include "cpu_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const acn_variant_spec variants[2] = {
    [ACN_VARIANT_TORCHVISION] = {
        .conv = {{3, 64, 11, 4, 2, 1}, {64, 192, 5, 1, 2, 1}, {192, 384, 3, 1, 1, 0},
                 {384, 256, 3, 1, 1, 0}, {256, 256, 3, 1, 1, 1}},
        .avgpool = 1, .log_softmax = 0, .fc_in = 256 * 6 * 6, .fc_hidden = 4096},
    [ACN_VARIANT_ORIGINAL] = {
        .conv = {{3, 96, 11, 4, 0, 1}, {96, 256, 5, 1, 2, 1}, {256, 384, 3, 1, 1, 0},
                 {384, 384, 3, 1, 1, 0}, {384, 256, 3, 1, 1, 1}},
        .avgpool = 0, .log_softmax = 1, .fc_in = 256 * 6 * 6, .fc_hidden = 4096},
};

enum { POOL_K = 3, POOL_S = 2, AVG_OUT = 6 };

const acn_variant_spec *acn_variant(int variant)
{
    return (variant == ACN_VARIANT_TORCHVISION || variant == ACN_VARIANT_ORIGINAL) ? &variants[variant] : NULL;
}

static int out_size(int n, int k, int s, int p) { return (int)acn_out_size(n, k, s, p, 1); }

void net_feature_size(int variant, int H, int W, int *FH, int *FW)
{
    const acn_variant_spec *s = acn_variant(variant);
    for (int l = 0; s && l < ACN_NUM_CONV && H > 0 && W > 0; l++) {
        const acn_conv_spec *c = &s->conv[l];
        H = out_size(H, c->k, c->stride, c->pad);
        W = out_size(W, c->k, c->stride, c->pad);
        if (c->pool_after && H > 0 && W > 0) {
            H = out_size(H, POOL_K, POOL_S, 0);
            W = out_size(W, POOL_K, POOL_S, 0);
        }
    }
    *FH = H;
    *FW = W;
}

struct acn_net {
    int variant, num_classes;
    const acn_variant_spec *spec;
    const float *w[ACN_NUM_WEIGHTS];
    /* Conv weights packed once for packed_uk's MR (~9 MB); the FC weights are
     * used in place. If the ISA is switched later, conv packs per call. */
    const acn_ukernel *packed_uk;
    float *packed[ACN_NUM_CONV];
    /* Winograd weights of the 3x3 and 5x5 stride-1 layers (16/9 and 64/25 of
     * their direct packing: 18 MB torchvision, 28 MB original), packed on a
     * layer's first Winograd call: loading stays as fast as before and a
     * batch-1 user never holds them. wino_unusable: a transformed weight was
     * not finite, the direct path serves that layer for good. */
    pthread_mutex_t wino_lock;
    float *_Atomic wino[ACN_NUM_CONV];
    _Atomic int wino_unusable[ACN_NUM_CONV];
    pthread_mutex_t arena_lock;
    float *arena;
    size_t arena_floats;
};

acn_net *net_create_cpu(int variant, int num_classes, const float *const weights[ACN_NUM_WEIGHTS],
                        int *status)
{
    const acn_variant_spec *s = acn_variant(variant);
    if (s == NULL || num_classes < 1) {
        *status = ACN_EINVAL;
        return NULL;
    }
    acn_net *net = calloc(1, sizeof *net);
    if (net == NULL) {
        *status = ACN_ENOMEM;
        return NULL;
    }
    net->variant = variant;
    net->num_classes = num_classes;
    net->spec = s;
    memcpy(net->w, weights, sizeof net->w);
    net->packed_uk = acn_active_ukernel();
    for (int l = 0, C = 3; l < ACN_NUM_CONV; l++) {
        const acn_conv_spec *c = &s->conv[l];
        const size_t floats = acn_conv_packed_floats(C, c->out_c, c->k, c->k, 1, net->packed_uk->MR);
        net->packed[l] = acn_alloc_large(floats * sizeof(float));
        if (net->packed[l] == NULL) {
            for (int j = 0; j < l; j++)
                free(net->packed[j]);
            free(net);
            *status = ACN_ENOMEM;
            return NULL;
        }
        acn_conv_pack_weights(net->packed[l], weights[2 * l], C, c->out_c, c->k, c->k, 1, net->packed_uk->MR);
        C = c->out_c;
    }
    pthread_mutex_init(&net->arena_lock, NULL);
    pthread_mutex_init(&net->wino_lock, NULL);
    *status = ACN_OK;
    return net;
}

void net_destroy_cpu(acn_net *net)
{
    if (net == NULL)
        return;
    pthread_mutex_destroy(&net->arena_lock);
    pthread_mutex_destroy(&net->wino_lock);
    for (int l = 0; l < ACN_NUM_CONV; l++) {
        free(net->packed[l]);
        free(net->wino[l]);
    }
    free(net->arena);
    free(net);
}

/* a*b*c*d with overflow detection: SIZE_MAX on overflow. */
static size_t mul4(size_t a, size_t b, size_t c, size_t d)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) || __builtin_mul_overflow(r, d, &r))
        return SIZE_MAX;
    return r;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* One half of the arena: the largest activation of any layer. */
static size_t half_arena_floats(const acn_net *net, int N, int H, int W)
{
    size_t biggest = max_size(mul4((size_t)N, (size_t)net->spec->fc_in, 1, 1),
                              mul4((size_t)N, (size_t)net->spec->fc_hidden, 1, 1));
    for (int l = 0; l < ACN_NUM_CONV; l++) {
        const acn_conv_spec *c = &net->spec->conv[l];
        H = out_size(H, c->k, c->stride, c->pad);
        W = out_size(W, c->k, c->stride, c->pad);
        biggest = max_size(biggest, mul4((size_t)N, (size_t)c->out_c, (size_t)H, (size_t)W));
        if (c->pool_after) {
            H = out_size(H, POOL_K, POOL_S, 0);
            W = out_size(W, POOL_K, POOL_S, 0);
        }
    }
    return biggest;
}

size_t net_arena_floats(const acn_net *net, int N, int H, int W)
{
    size_t half = half_arena_floats(net, N, H, W);
    return half > SIZE_MAX / 2 / sizeof(float) ? SIZE_MAX : 2 * half;
}

/* Linux overcommits: a too-large malloc succeeds and the process is killed
 * later, when the pages are touched. Refuse up front what cannot fit in RAM. */
int acn_fits_in_memory(size_t bytes)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return 1;
    return bytes <= (size_t)pages * (size_t)page;
}

static int fits_in_memory(size_t floats)
{
    return floats != SIZE_MAX && floats <= SIZE_MAX / sizeof(float) && acn_fits_in_memory(floats * sizeof(float));
}

/* Stage timer: a no-op unless the caller asked for times. */
typedef struct { double *seconds; double t; } stage_clock;

static void stage_done(stage_clock *clk, int stage)
{
    if (clk->seconds == NULL)
        return;
    const double t = acn_now_seconds();
    clk->seconds[stage] = t - clk->t;
    clk->t = t;
}

/* Layer l's Winograd weights (C input channels), packed now if this is its
 * first Winograd call; NULL when it cannot have them (not finite, or no memory
 * this time). Forwards run concurrently: one thread packs, the others wait. */
static const float *wino_weights(acn_net *net, int l, int C)
{
    const float *u = atomic_load(&net->wino[l]);
    if (u != NULL || atomic_load(&net->wino_unusable[l]))
        return u;
    /* A fork while another thread packed leaves the child's copy of the lock held by a
     * thread that does not exist there: the child then takes the direct path. */
    if (acn_in_forked_child()) {
        if (pthread_mutex_trylock(&net->wino_lock) != 0)
            return NULL;
    } else
        pthread_mutex_lock(&net->wino_lock);
    u = atomic_load(&net->wino[l]);
    if (u == NULL && !atomic_load(&net->wino_unusable[l])) {
        const acn_conv_spec *c = &net->spec->conv[l];
        const int MR = net->packed_uk->MR;
        float *w = acn_alloc_large(acn_wino_packed_floats(C, c->out_c, c->k, MR) * sizeof(float));
        const int packed = w == NULL ? -1 : acn_wino_pack_weights(w, net->w[2 * l], C, c->out_c, c->k, MR);
        if (packed == 1) {
            atomic_store(&net->wino[l], w);
            u = w;
        } else {
            free(w);
            if (packed == 0)
                atomic_store(&net->wino_unusable[l], 1);
        }
    }
    pthread_mutex_unlock(&net->wino_lock);
    return u;
}

static int run_layers(acn_net *net, float *out, const float *inp, int N, int H, int W, float *arena,
                      size_t half, double *seconds)
{
    static const int conv_stage[ACN_NUM_CONV] = {ACN_STAGE_CONV1, ACN_STAGE_CONV2, ACN_STAGE_CONV3,
                                                 ACN_STAGE_CONV4, ACN_STAGE_CONV5};
    /* Only the layers with pool_after set reach pool_stage[]. */
    static const int pool_stage[ACN_NUM_CONV] = {ACN_STAGE_POOL1, ACN_STAGE_POOL2, ACN_STAGE_POOL5,
                                                 ACN_STAGE_POOL5, ACN_STAGE_POOL5};
    stage_clock clk = {seconds, 0.0};
    if (seconds != NULL) {
        for (int i = 0; i < ACN_NUM_STAGES; i++)
            seconds[i] = 0.0;
        clk.t = acn_now_seconds();
    }
    const acn_variant_spec *s = net->spec;
    float *buf[2] = {arena, arena + half};
    int which = 0, C = 3, st;
    const acn_ukernel *uk = acn_active_ukernel();
    const float *src = inp;
    for (int l = 0; l < ACN_NUM_CONV; l++) {
        const acn_conv_spec *c = &s->conv[l];
        float *dst = buf[which];
        /* The other half of the arena is free unless it holds the input. */
        float *spare = buf[which ^ 1];
        float *work = (src != spare && acn_conv_phase_floats(N, C, H, W, c->stride, c->pad, c->pad) <= half) ? spare : NULL;
        const int OH = out_size(H, c->k, c->stride, c->pad), OW = out_size(W, c->k, c->stride, c->pad);
        const int wino = uk == net->packed_uk && acn_wino_applies(c->k, c->k, c->stride, c->stride, 1, N, OH, OW, uk);
        const float *u = wino ? wino_weights(net, l, C) : NULL;
        st = u == NULL ? ACN_WINO_NONFINITE
                       : acn_wino_conv(dst, src, u, uk, net->w[2 * l + 1], N, C, H, W, c->out_c, c->k, c->pad,
                                       c->pad, 1);
        /* The direct path: no Winograd for this layer, or it met a NaN or Inf,
         * whose places it would not keep. */
        if (st == ACN_WINO_NONFINITE && uk == net->packed_uk)
            st = acn_conv2d_packed(dst, src, net->packed[l], uk, net->w[2 * l + 1], N, C, H, W, c->out_c,
                                   c->k, c->k, c->stride, c->stride, c->pad, c->pad, 1, 1, 1, 1, work);
        else if (st == ACN_WINO_NONFINITE)
            st = conv2d_forward_cpu(dst, src, net->w[2 * l], net->w[2 * l + 1], N, C, H, W, c->out_c,
                                    c->k, c->k, c->stride, c->stride, c->pad, c->pad, 1, 1, 1, 1, NULL);
        if (st != ACN_OK)
            return st;
        stage_done(&clk, conv_stage[l]);
        C = c->out_c;
        H = out_size(H, c->k, c->stride, c->pad);
        W = out_size(W, c->k, c->stride, c->pad);
        src = dst;
        which ^= 1;
        if (c->pool_after) {
            const int OH = out_size(H, POOL_K, POOL_S, 0), OW = out_size(W, POOL_K, POOL_S, 0);
            dst = buf[which];
            max_pool2d_forward_cpu(dst, NULL, src, N * C, H, W, POOL_K, POOL_K, POOL_S, POOL_S, 0, 0, 1, 1, OH, OW);
            stage_done(&clk, pool_stage[l]);
            H = OH;
            W = OW;
            src = dst;
            which ^= 1;
        }
    }
    if (H != AVG_OUT || W != AVG_OUT) {
        if (!s->avgpool)
            return ACN_EINVAL;
        float *dst = buf[which];
        adaptive_avg_pool2d_forward_cpu(dst, src, N * C, H, W, AVG_OUT, AVG_OUT);
        stage_done(&clk, ACN_STAGE_AVGPOOL);
        src = dst;
        which ^= 1;
    }
    const int fc_in[ACN_NUM_FC] = {s->fc_in, s->fc_hidden, s->fc_hidden};
    const int fc_out[ACN_NUM_FC] = {s->fc_hidden, s->fc_hidden, net->num_classes};
    for (int l = 0; l < ACN_NUM_FC; l++) {
        const int last = l == ACN_NUM_FC - 1;
        float *dst = last ? out : buf[which];
        st = linear_forward_cpu(dst, src, net->w[2 * ACN_NUM_CONV + 2 * l], net->w[2 * ACN_NUM_CONV + 2 * l + 1],
                                N, fc_in[l], fc_out[l], !last);
        if (st != ACN_OK)
            return st;
        stage_done(&clk, ACN_STAGE_FC1 + l);
        src = dst;
        which ^= 1;
    }
    if (s->log_softmax) {
        log_softmax_forward_cpu(out, out, (size_t)N, (size_t)net->num_classes, 1);
        stage_done(&clk, ACN_STAGE_LOG_SOFTMAX);
    }
    return ACN_OK;
}

int net_forward_cpu(acn_net *net, float *out, const float *inp, int N, int H, int W)
{
    return net_forward_cpu_timed(net, out, inp, N, H, W, NULL);
}

int net_forward_cpu_timed(acn_net *net, float *out, const float *inp, int N, int H, int W,
                          double seconds[ACN_NUM_STAGES])
{
    if (N == 0)
        return ACN_OK;
    int FH, FW;
    net_feature_size(net->variant, H, W, &FH, &FW);
    if (N < 0 || FH < 1 || FW < 1 || (!net->spec->avgpool && (FH != AVG_OUT || FW != AVG_OUT)))
        return ACN_EINVAL;
    const size_t half = half_arena_floats(net, N, H, W);
    const size_t total = net_arena_floats(net, N, H, W);
    if (!fits_in_memory(total))
        return ACN_ENOMEM;

    /* A second thread calling while the arena is in use gets an arena of its own. */
    if (pthread_mutex_trylock(&net->arena_lock) == 0) {
        if (net->arena_floats < total) {
            free(net->arena);
            net->arena = acn_alloc_large(total * sizeof(float));
            net->arena_floats = net->arena ? total : 0;
        }
        int st = net->arena ? run_layers(net, out, inp, N, H, W, net->arena, half, seconds) : ACN_ENOMEM;
        pthread_mutex_unlock(&net->arena_lock);
        return st;
    }
    float *own = acn_alloc_large(total * sizeof(float));
    if (own == NULL)
        return ACN_ENOMEM;
    int st = run_layers(net, out, inp, N, H, W, own, half, seconds);
    free(own);
    return st;
}
