/* isa_variants.h — the kernel table each instruction-set translation unit fills in.
 *
 * kernels_avx512.c, kernels_avx2.c and kernels_generic.c each compile the same op bodies
 * (ops_impl.h) under their own `#pragma GCC target`, plus their own GEMM micro-kernel.
 * The public entry points in ops.c and gemm.c call through loop_kernels_active(). */
#ifndef LOOP_ISA_VARIANTS_H
#define LOOP_ISA_VARIANTS_H

#include <stddef.h>
#include <stdint.h>

#define LOOP_MAX_MR 12
/* ukernel `accumulate` values: 0 overwrite C, 1 add to C, LOOP_STORE_STREAM overwrite C with
 * non-temporal stores (only the AVX-512 kernel is given it) */
#define LOOP_STORE_STREAM 2
#define LOOP_MAX_NR 32

typedef struct {
    const char *name;
    int mr, nr; /* micro-kernel tile: MR rows of C by NR columns */
    /* C[MR,NR] (+)= A_panel[kc][MR]^T-broadcast * B_panel[kc][NR]; panels packed, B 64-byte aligned */
    void (*ukernel)(int kc, const float *a, const float *b, float *c, long ldc, int accumulate);
    double (*fma_peak)(long iters);
    void (*pack_a)(float *dst, const float *A, long lda, int trans, long i0, long k0, int m, int kc, int mr);
    void (*pack_b)(float *dst, const float *B, long ldb, int trans, long k0, long j0, int n, int kc, int nr);
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
    void (*attention_forward)(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *att,
                               int B, int T, int C, int NH);
    void (*residual_forward)(float *out, const float *a, const float *b, size_t n);
    void (*bias_backward)(float *dbias, const float *dout, int N, int C);
    void (*crossentropy)(float *logits, float *losses, const int32_t *targets, int N, int V,
                         float grad_scale, int write_grad);
    void (*adamw)(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bias_corr1,
                  float bias_corr2, float grad_scale);
    double (*sum_squares)(const float *x, size_t n);
    void (*scale)(float *x, float s, size_t n);
} loop_isa_kernels;

extern const loop_isa_kernels loop_kernels_avx512, loop_kernels_avx2, loop_kernels_generic;
const loop_isa_kernels *loop_kernels_active(void);

double fma_peak_avx512(long iters);
double fma_peak_avx2(long iters);
double fma_peak_generic(long iters);

#endif
