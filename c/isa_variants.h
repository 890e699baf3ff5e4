/* isa_variants.h — the kernel tables: one per instruction set for the ops, one per GEMM
 * micro-kernel (precision x instruction set), BLIS's per-architecture context in small.
 *
 * kernels_generic.c (every architecture), kernels_avx2.c and kernels_avx512.c (x86-64) and
 * kernels_neon.c (aarch64) each compile the same op bodies (ops_impl.h) and GEMM packing
 * (gemm_pack.h) under their own target, plus their own fp32 micro-kernel; gemm_bf16.c holds the
 * native bf16 micro-kernels (AVX512-BF16, AMX) and their exact C emulations. Every table is filled
 * with designated initializers, so a field is never set by position; the op fields come from
 * ops.def (isa_ops_fields.h fills them).
 *
 * Calls go one way: the public entry points (ops.c, gemm.c) ask runtime.c's dispatch for the
 * active table (loop_kernels_active, loop_gemm_kernel_active), and call into it; a table's
 * functions (ops_impl.h, the micro-kernels) call nothing above them, only runtime.c's services
 * for scratch memory and busy time (internal.h). */
#ifndef LOOP_ISA_VARIANTS_H
#define LOOP_ISA_VARIANTS_H

#include <stddef.h>
#include <stdint.h>
#include "ops.h"

#define LOOP_MAX_MR 32 /* AMX: two 16-row A tiles */
#define LOOP_MAX_NR 32
/* ukernel `accumulate` values: 0 overwrite C, 1 add to C, LOOP_STORE_STREAM overwrite C with
 * non-temporal stores (only kernels with .can_stream are given it) */
#define LOOP_STORE_STREAM 2

enum { LOOP_FP32 = 0, LOOP_BF16 = 1 };

/* C[MR,NR] (+)= A_panel . B_panel over kc (a multiple of .kpack) packed K entries; B 64-byte aligned */
typedef void (*loop_ukernel_fn)(int kc, const void *a, const void *b, float *c, long ldc, int accumulate);
/* op(A) rows [i0, i0+m) x cols [k0, k0+kc) -> panels of mr rows, K zero-padded to a multiple of .kpack */
typedef void (*loop_pack_a_fn)(void *dst, const float *A, long lda, int trans, long i0, long k0, int m, int kc,
                               int mr);
/* op(B) rows [k0, k0+kc) x cols [j0, j0+n), n <= nr -> one panel, zero-padded */
typedef void (*loop_pack_b_fn)(void *dst, const float *B, long ldb, int trans, long k0, long j0, int n, int kc,
                               int nr);

/* A GEMM micro-kernel with its packing: everything gemm.c needs to know about it. The block
 * sizes MC/KC/NC follow from .mr, .nr, .elem_bytes and the caches by gemm.c's blocking() alone. */
typedef struct {
    const char *name;   /* shown by `loop info` and the dashboard */
    int precision;      /* LOOP_FP32, or LOOP_BF16: inputs rounded to bf16, fp32 accumulation */
    int mr, nr;         /* the C tile: MR rows by NR columns */
    int kpack;          /* packed K is a multiple of this: 1 (fp32), 2 (bf16 pairs), 32 (AMX tiles) */
    int elem_bytes;     /* bytes per packed element: 4 (fp32 panels) or 2 (bf16 panels) */
    int can_stream;     /* the ukernel implements LOOP_STORE_STREAM */
    int b_panel_in_l1;  /* KC keeps a B micro-panel in half of L1d (AMX: two B tiles per 32 k are
                           read at up to 64 bytes a cycle), else 1.5x L1d (FMA kernels, see gemm.c) */
    loop_ukernel_fn ukernel;
    loop_pack_a_fn pack_a;
    loop_pack_b_fn pack_b;
    double (*peak)(long iters); /* runs a register-resident loop; returns the FLOPs it did */
    /* optional: run on every thread of a GEMM before its first and after its last ukernel call
     * (AMX loads its tile configuration and releases the tiles: other libraries share them) */
    void (*thread_begin)(void);
    void (*thread_end)(void);
} loop_gemm_kernel;

typedef struct {
    const char *name;
    const loop_gemm_kernel *gemm_fp32;
    const loop_gemm_kernel *gemm_bf16_portable; /* bf16-rounded inputs on this ISA's fp32 FMAs */
    /* one field per op of ops.def, of its function type */
#define OP(name, params, args, stat, flops, bytes) loop_##name##_fn *name;
#define OP_RETURNING(type, name, params, args, stat, flops, bytes) loop_##name##_fn *name;
#include "ops.def"
} loop_isa_kernels;

/* per architecture: avx512 and avx2 exist in an x86-64 build, neon in an aarch64 one */
extern const loop_isa_kernels loop_kernels_avx512, loop_kernels_avx2, loop_kernels_neon, loop_kernels_generic;
/* runtime.c's dispatch: the active ISA's table */
const loop_isa_kernels *loop_kernels_active(void);

/* gemm_bf16.c: the native bf16 micro-kernels and their C emulations (same packing, same
 * products and sums, scalar: they let any CPU test the native paths' packing and driver) */
extern const loop_gemm_kernel loop_gemm_avx512bf16, loop_gemm_amx, loop_gemm_emu_avx512bf16, loop_gemm_emu_amx;
int loop_cpu_has_avx512bf16(void);
int loop_amx_usable(void); /* CPU has AMX-BF16 and the kernel granted the tile state */
/* the micro-kernel GEMMs of `precision` use now (ISA and bf16 path as set in runtime.c) */
const loop_gemm_kernel *loop_gemm_kernel_active(int precision);

#endif
