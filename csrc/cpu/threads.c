/* Thread count shared by every OpenMP region of the kernels, and fork safety.
 *
 * omp_set_num_threads() only changes the calling thread's setting, so a value
 * set from one Python thread would not reach another: the kernels read this
 * process-wide value and pass it in num_threads() instead.
 */
#define _DEFAULT_SOURCE   /* madvise */
#include "alexnet_c.h"
#include "cpu_internal.h"

#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>

static atomic_int requested_threads;   /* 0: follow OMP_NUM_THREADS / the core count */
static atomic_int in_forked_child;

/* libgomp's worker pool does not survive fork(): a child that enters a parallel
 * region waits forever for threads that only exist in the parent. A child
 * therefore runs every kernel on its calling thread alone. */
static void mark_forked_child(void) { atomic_store(&in_forked_child, 1); }

int acn_get_num_threads(void)
{
    if (atomic_load(&in_forked_child))
        return 1;
    int n = atomic_load(&requested_threads);
    return n > 0 ? n : omp_get_max_threads();
}

void acn_set_num_threads(int n) { atomic_store(&requested_threads, n > 0 ? n : 0); }

int acn_in_forked_child(void) { return atomic_load(&in_forked_child); }

void acn_runtime_init(void)
{
    static atomic_int done;
    if (atomic_exchange(&done, 1))
        return;
    pthread_atfork(NULL, NULL, mark_forked_child);
    acn_isa_init_from_env();
    acn_wino_init_from_env();
}

/* ---- large buffers ---- */

#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

enum { HUGE_PAGE = 2 << 20 };

/* Buffers of a few MB and more (packed weights, the activation arena) are put
 * on 2 MB pages where the kernel allows it (THP in "madvise" mode, the usual
 * default): the kernels stream them, and on a virtual machine every 4 KB TLB
 * miss is a two-level page walk. Freed with free(). */
void *acn_alloc_large(size_t bytes)
{
    const size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < HUGE_PAGE)
        return aligned_alloc(64, rounded ? rounded : 64);
    const size_t size = (rounded + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
    void *p = aligned_alloc(HUGE_PAGE, size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p != NULL)
        (void)madvise(p, size, MADV_HUGEPAGE);   /* advice only: 4 KB pages still work */
#endif
    return p;
}

/* ---- per-thread packing buffers ---- */

typedef struct { float *ptr; size_t cap; } thread_buffer;
typedef struct { thread_buffer slot[ACN_TLS_SLOTS]; } thread_buffers;

static pthread_key_t buffers_key;
static pthread_once_t buffers_once = PTHREAD_ONCE_INIT;

static void free_thread_buffers(void *p)
{
    thread_buffers *b = p;
    for (int i = 0; i < ACN_TLS_SLOTS; i++)
        free(b->slot[i].ptr);
    free(b);
}

static void make_buffers_key(void) { pthread_key_create(&buffers_key, free_thread_buffers); }

float *acn_thread_buffer(int slot, size_t floats)
{
    pthread_once(&buffers_once, make_buffers_key);
    thread_buffers *b = pthread_getspecific(buffers_key);
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL || pthread_setspecific(buffers_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    thread_buffer *t = &b->slot[slot];
    if (t->cap < floats) {
        free(t->ptr);
        /* 64-byte aligned (acn_alloc_large): packed panels are read with aligned vector loads. */
        t->ptr = acn_alloc_large(floats * sizeof(float));
        t->cap = t->ptr ? floats : 0;
    }
    return t->ptr;
}
