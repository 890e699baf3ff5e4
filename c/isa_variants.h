/* isa_variants.h — the kernel tables: one per instruction set for the ops, one per GEMM
 * micro-kernel (precision x instruction set), BLIS's per-architecture context in small.
 *
 * kernels_avx512.c, kernels_avx2.c and kernels_generic.c each compile the same op bodies
 * (ops_impl.h) and GEMM packing (gemm_pack.h) under their own `#pragma GCC target`, plus their
 * own fp32 micro-kernel; gemm_bf16.c holds the native bf16 micro-kernels (AVX512-BF16, AMX) and
 * their exact C emulations. Every table is filled with designated initializers, so a field is
 * never set by position. The public entry points in ops.c and gemm.c call through
 * loop_kernels_active() and loop_gemm_kernel_active(). */
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
    void (*encoder_forward)(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                            int B, int T, int C);
    void (*encoder_backward)(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                             int B, int T, int C);
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C);
    void (*bias_gelu_forward)(float *pre, float *out, const float *bias, int N, int C);
    void (*gelu_backward)(float *dinp, const float *pre, const float *dout, size_t n);
    void (*attention_forward)(float *out, float *lse, const float *qkv, int B, int T, int C, int NH, int precision);
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *out,
                               const float *lse, int B, int T, int C, int NH, int precision);
    void (*residual_forward)(float *out, const float *a, const float *b, size_t n);
    void (*bias_backward)(float *dbias, const float *dout, int N, int C);
    void (*dropout)(float *out, const float *inp, size_t n, const loop_dropout_key *key);
    void (*residual_dropout)(float *out, const float *a, const float *b, size_t n, const loop_dropout_key *key);
    void (*dropout_bias_backward)(float *dmasked, float *dbias, const float *dout, int N, int C,
                                  const loop_dropout_key *key);
    void (*gemv)(float *y, const float *x, const float *W, const float *bias, int K, int N);
    void (*gemv_t)(float *y, const float *x, const float *W, int K, int N);
    void (*attention_decode)(float *out, const float *q, const float *kc, const float *vc, int NH, int hs, int n,
                             int cap);
    void (*crossentropy)(float *logits, float *losses, const int32_t *targets, int N, int V, int Vp,
                         float grad_scale, int write_grad);
    void (*adamw)(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bias_corr1,
                  float bias_corr2, float grad_scale);
    double (*sum_squares)(const float *x, size_t n);
    void (*scale)(float *x, float s, size_t n);
} loop_isa_kernels;

/* per architecture: avx512 and avx2 exist in an x86-64 build, neon in an aarch64 one */
extern const loop_isa_kernels loop_kernels_avx512, loop_kernels_avx2, loop_kernels_neon, loop_kernels_generic;
const loop_isa_kernels *loop_kernels_active(void);

/* gemm_bf16.c: the native bf16 micro-kernels and their C emulations (same packing, same
 * products and sums, scalar: they let any CPU test the native paths' packing and driver) */
extern const loop_gemm_kernel loop_gemm_avx512bf16, loop_gemm_amx, loop_gemm_emu_avx512bf16, loop_gemm_emu_amx;
int loop_cpu_has_avx512bf16(void);
int loop_amx_usable(void); /* CPU has AMX-BF16 and the kernel granted the tile state */
/* the micro-kernel GEMMs of `precision` use now (ISA and bf16 path as set in runtime.c) */
const loop_gemm_kernel *loop_gemm_kernel_active(int precision);

/* Fill an ISA's op table: every op body of ops_impl.h under this ISA's ISA_FN names. */
#define ISA_OPS_FIELDS                                                                             \
    .encoder_forward = ISA_FN(encoder_forward), .encoder_backward = ISA_FN(encoder_backward),      \
    .layernorm_forward = ISA_FN(layernorm_forward), .layernorm_backward = ISA_FN(layernorm_backward), \
    .bias_gelu_forward = ISA_FN(bias_gelu_forward), .gelu_backward = ISA_FN(gelu_backward),        \
    .attention_forward = ISA_FN(attention_forward), .attention_backward = ISA_FN(attention_backward), \
    .residual_forward = ISA_FN(residual_forward), .bias_backward = ISA_FN(bias_backward),          \
    .dropout = ISA_FN(dropout), .residual_dropout = ISA_FN(residual_dropout),                      \
    .dropout_bias_backward = ISA_FN(dropout_bias_backward),                                        \
    .crossentropy = ISA_FN(crossentropy), .adamw = ISA_FN(adamw), .sum_squares = ISA_FN(sum_squares), \
    .scale = ISA_FN(scale), .gemv = ISA_FN(gemv), .gemv_t = ISA_FN(gemv_t),                       \
    .attention_decode = ISA_FN(attention_decode)

#endif
