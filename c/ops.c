/* ops.c — public entry points: route each op to the active ISA's build and record its stats.
 * FLOP counts for the non-GEMM ops are per-element estimates (exp and tanh count as one);
 * bytes are the least each op must read and write. */
#include "ops.h"
#include "internal.h"
#include "isa_variants.h"

const loop_isa_kernels *loop_kernels_active(void) {
    switch (loop_isa_active) {
#if defined(__x86_64__)
    case LOOP_ISA_AVX512: return &loop_kernels_avx512;
    case LOOP_ISA_AVX2: return &loop_kernels_avx2;
#elif defined(__aarch64__)
    case LOOP_ISA_NEON: return &loop_kernels_neon;
#endif
    default: return &loop_kernels_generic;
    }
}

const loop_gemm_kernel *loop_gemm_kernel_active(int precision) {
    if (precision == LOOP_FP32) return loop_kernels_active()->gemm_fp32;
    switch (loop_bf16_path_get()) {
#if defined(__x86_64__)
    case LOOP_BF16_AVX512BF16: return &loop_gemm_avx512bf16;
    case LOOP_BF16_AMX: return &loop_gemm_amx;
#endif
    case LOOP_BF16_EMU_AVX512BF16: return &loop_gemm_emu_avx512bf16;
    case LOOP_BF16_EMU_AMX: return &loop_gemm_emu_amx;
    default: return loop_kernels_active()->gemm_bf16_portable;
    }
}

#define OPS loop_kernels_active()
#define F4 4.0

void loop_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int B, int T, int C) {
    KSTAT_BEGIN;
    OPS->encoder_forward(out, tokens, wte, wpe, B, T, C);
    double n = (double)B * T * C;
    KSTAT_END(K_ENCODER_FWD, n, F4 * 3 * n);
}

void loop_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B, int T, int C) {
    KSTAT_BEGIN;
    OPS->encoder_backward(dwte, dwpe, dout, tokens, B, T, C);
    double n = (double)B * T * C;
    KSTAT_END(K_ENCODER_BWD, 2 * n, F4 * 5 * n);
}

void loop_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, int C) {
    KSTAT_BEGIN;
    OPS->layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
    double n = (double)N * C;
    KSTAT_END(K_LAYERNORM_FWD, 7 * n, F4 * 2 * n);
}

void loop_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *weight, const float *mean, const float *rstd, int N, int C) {
    KSTAT_BEGIN;
    OPS->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
    double n = (double)N * C;
    KSTAT_END(K_LAYERNORM_BWD, 14 * n, F4 * 4 * n);
}

void loop_bias_gelu_forward(float *pre, float *out, const float *bias, int N, int C) {
    KSTAT_BEGIN;
    OPS->bias_gelu_forward(pre, out, bias, N, C);
    double n = (double)N * C;
    KSTAT_END(K_BIAS_GELU_FWD, 12 * n, F4 * 3 * n);
}

void loop_gelu_backward(float *dinp, const float *pre, const float *dout, size_t n) {
    KSTAT_BEGIN;
    OPS->gelu_backward(dinp, pre, dout, n);
    KSTAT_END(K_GELU_BWD, 20.0 * n, F4 * 3 * n);
}

/* causal: T(T+1)/2 (query, key) pairs per head, each 2*hs FLOPs for q.k and 2*hs for a.v */
static double attention_flops(int B, int T, int C) { return (double)B * T * (T + 1) / 2.0 * C * 4.0; }

void loop_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH, int precision) {
    KSTAT_BEGIN;
    OPS->attention_forward(out, lse, qkv, B, T, C, NH, precision);
    KSTAT_END(K_ATTENTION_FWD, attention_flops(B, T, C), F4 * ((double)B * T * 4 * C + (double)B * NH * T));
}

/* backward recomputes S = Q K^T: 2*hs per pair more than the 4*hs*2 of the gradients proper, but
 * the FLOPs counted stay the conventional 2x forward, as for every other op */
void loop_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse,
                             int B, int T, int C, int NH, int precision) {
    KSTAT_BEGIN;
    OPS->attention_backward(dqkv, dout, qkv, out, lse, B, T, C, NH, precision);
    KSTAT_END(K_ATTENTION_BWD, 2 * attention_flops(B, T, C), F4 * ((double)B * T * 8 * C + (double)B * NH * T));
}

void loop_residual_forward(float *out, const float *a, const float *b, size_t n) {
    KSTAT_BEGIN;
    OPS->residual_forward(out, a, b, n);
    KSTAT_END(K_RESIDUAL_FWD, (double)n, F4 * 3 * n);
}

/* a Philox block (10 rounds of 2 multiplies and 4 xors) per four elements, one multiply each */
static double dropout_flops(size_t n) { return 16.0 * n; }

void loop_dropout(float *out, const float *inp, size_t n, const loop_dropout_key *key) {
    KSTAT_BEGIN;
    OPS->dropout(out, inp, n, key);
    KSTAT_END(K_DROPOUT, dropout_flops(n), F4 * 2 * n);
}

void loop_residual_dropout(float *out, const float *a, const float *b, size_t n, const loop_dropout_key *key) {
    KSTAT_BEGIN;
    OPS->residual_dropout(out, a, b, n, key);
    KSTAT_END(K_RESIDUAL_DROPOUT, dropout_flops(n) + n, F4 * 3 * n);
}

void loop_dropout_bias_backward(float *dmasked, float *dbias, const float *dout, int N, int C, const loop_dropout_key *key) {
    KSTAT_BEGIN;
    OPS->dropout_bias_backward(dmasked, dbias, dout, N, C, key);
    double n = (double)N * C;
    KSTAT_END(K_DROPOUT_BIAS_BWD, dropout_flops((size_t)n) + n, F4 * 2 * n);
}

void loop_bias_backward(float *dbias, const float *dout, int N, int C) {
    KSTAT_BEGIN;
    OPS->bias_backward(dbias, dout, N, C);
    KSTAT_END(K_BIAS_BWD, (double)N * C, F4 * (double)N * C);
}

void loop_gemv(float *y, const float *x, const float *W, const float *bias, int K, int N) {
    KSTAT_BEGIN;
    OPS->gemv(y, x, W, bias, K, N);
    KSTAT_END(K_GEMV, 2.0 * K * N, F4 * ((double)K * N + K + N));
}

void loop_gemv_t(float *y, const float *x, const float *W, int K, int N) {
    KSTAT_BEGIN;
    OPS->gemv_t(y, x, W, K, N);
    KSTAT_END(K_GEMV, 2.0 * K * N, F4 * ((double)K * N + K + N));
}

void loop_attention_decode(float *out, const float *q, const float *kc, const float *vc, int NH, int hs, int n, int cap) {
    KSTAT_BEGIN;
    OPS->attention_decode(out, q, kc, vc, NH, hs, n, cap);
    KSTAT_END(K_ATTENTION_DECODE, 4.0 * NH * hs * n, F4 * (2.0 * NH * hs * n + 2.0 * NH * hs));
}

void loop_crossentropy(float *logits, float *losses, const int32_t *targets, int N, int V, int Vp, float grad_scale, int write_grad) {
    KSTAT_BEGIN;
    OPS->crossentropy(logits, losses, targets, N, V, Vp, grad_scale, write_grad);
    double n = (double)N * V;
    KSTAT_END(K_CROSSENTROPY, (write_grad ? 5 : 3) * n, F4 * (write_grad ? 2 : 1) * n);
}

void loop_adamw(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2, float grad_scale) {
    KSTAT_BEGIN;
    OPS->adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale);
    KSTAT_END(K_ADAMW, 14.0 * n, F4 * 7 * n);
}

double loop_sum_squares(const float *x, size_t n) {
    KSTAT_BEGIN;
    double s = OPS->sum_squares(x, n);
    KSTAT_END(K_GRAD_NORM, 2.0 * n, F4 * n);
    return s;
}

void loop_scale(float *x, float s, size_t n) {
    KSTAT_BEGIN;
    OPS->scale(x, s, n);
    KSTAT_END(K_SCALE, (double)n, F4 * 2 * n);
}
