/* internal.h — helpers shared by the kernel translation units; not part of the Python API. */
#ifndef LOOP_INTERNAL_H
#define LOOP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <omp.h>
#include "runtime.h"

#define LOOP_MAX_THREADS 256
#define LOOP_ALIGN 64

extern int loop_isa_active;
extern int loop_nthreads;

static inline uint64_t loop_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Busy-time accounting inside a parallel region: BUSY_BEGIN before a work-sharing loop
 * marked nowait, BUSY_END after it, then the barrier (which is not counted). */
void loop_busy_add(int thread, uint64_t ns);
#define BUSY_BEGIN uint64_t busy_t0__ = loop_now_ns()
#define BUSY_END loop_busy_add(omp_get_thread_num(), loop_now_ns() - busy_t0__)

/* Order this thread's non-temporal (streaming) stores before the barrier that publishes them. */
static inline void loop_store_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#endif
}

/* C11's _Static_assert (GCC and Clang accept it in C99 mode) */
#define LOOP_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

/* Kernel ids for the per-kernel table, from ops.def's KSTAT rows. */
enum {
#define KSTAT(id, name) id,
#include "ops.def"
    K_COUNT
};
void loop_kstat_add(int kernel, uint64_t ns, double flops, double bytes);
#define KSTAT_BEGIN uint64_t kstat_t0__ = loop_now_ns()
#define KSTAT_END(kernel, flops, bytes) loop_kstat_add(kernel, loop_now_ns() - kstat_t0__, (flops), (bytes))

/* Scratch: a named buffer that only grows, 64-byte aligned, owned by the library. */
float *loop_scratch(int slot, size_t floats);
enum { SCRATCH_PACK_B, SCRATCH_REDUCE, SCRATCH_ATTN, SCRATCH_PACK_A0 /* + thread number */ };

/* Fixed chunking for reductions, so sums do not depend on the thread count. */
#define LOOP_REDUCE_CHUNKS 64

#endif
