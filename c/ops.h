/* ops.h — the transformer's non-GEMM ops, forward and backward: each one's function type
 * loop_<name>_fn and its public entry point loop_<name>, generated from ops.def (shapes and
 * meaning are written there, once). build_kernels.py feeds this header through the C preprocessor
 * with LOOP_CDEF defined to get CFFI's cdef: plain declarations, no system headers. */
#ifndef LOOP_OPS_H
#define LOOP_OPS_H

#ifndef LOOP_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

/* Dropout (training only) of one tensor in one step, inverted: element e of the tensor is kept with
 * probability 1 - p and scaled by 1/(1 - p), else zeroed. Whether it is kept is word (g mod 4) of
 * Philox4x32-10 with key (seed low, seed high) and counter (g / 4 low, g / 4 high, site, step), where
 * g = offset + e: a pure function of those numbers, so any thread count, a resumed run and backward
 * (which draws the mask again instead of storing it) all see the same mask. Kept when the word is
 * >= floor(p * 2^32); the scale is 1/(1 - p) in double, rounded to float. */
typedef struct {
    double p;        /* drop probability, 0 <= p < 1 */
    uint64_t seed;   /* the run's seed */
    uint64_t offset; /* g of the tensor's first element (its rows before it in the global batch x width) */
    uint32_t step;   /* the training step */
    uint32_t site;   /* which tensor: 0 embeddings, 2l + 1 layer l's attention output, 2l + 2 its MLP output */
} loop_dropout_key;

#ifndef LOOP_CDEF
#define OP(name, params, args, stat, flops, bytes) typedef void loop_##name##_fn params; loop_##name##_fn loop_##name;
#define OP_RETURNING(type, name, params, args, stat, flops, bytes)                                 \
    typedef type loop_##name##_fn params;                                                          \
    loop_##name##_fn loop_##name;
#else
#define OP(name, params, args, stat, flops, bytes) void loop_##name params;
#define OP_RETURNING(type, name, params, args, stat, flops, bytes) type loop_##name params;
#endif
#include "ops.def"

#endif
