/* ops.c — the public entry point of every op of ops.def: ask runtime.c's dispatch for the active
 * ISA's table, call the op there, and record its statistics (FLOPs and bytes as ops.def counts
 * them). Nothing else lives here; the GEMM's entry points are in gemm.c. */
#include "ops.h"
#include "internal.h"
#include "isa_variants.h"

#define F4 4.0 /* bytes per float, in ops.def's byte counts */

#define OP(name, params, args, stat, flops, bytes)                                                 \
    void loop_##name params {                                                                      \
        KSTAT_BEGIN;                                                                               \
        loop_kernels_active()->name args;                                                          \
        KSTAT_END(stat, flops, bytes);                                                             \
    }
#define OP_RETURNING(type, name, params, args, stat, flops, bytes)                                 \
    type loop_##name params {                                                                      \
        KSTAT_BEGIN;                                                                               \
        const type result = loop_kernels_active()->name args;                                      \
        KSTAT_END(stat, flops, bytes);                                                             \
        return result;                                                                             \
    }
#include "ops.def"
