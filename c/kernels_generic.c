/* kernels_generic.c — portable C build of every kernel, on every architecture (the baseline's
 * vectors after auto-vectorisation: SSE2 on x86-64, NEON on aarch64): a 4x16 micro-kernel the
 * compiler vectorises, and the ops of ops_impl.h. */
#define ISA_FN(name) name##_generic
#include "ops_impl.h"
#include "gemm_pack.h"

static void ukernel_generic(int kc, const void *a_, const void *b_, float *restrict c, long ldc, int accumulate) {
    const float *restrict a = a_, *restrict b = b_;
    float acc[4][16];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < 4; i++) {
            float ai = a[i];
            #pragma omp simd
            for (int j = 0; j < 16; j++) acc[i][j] += ai * b[j];
        }
        a += 4;
        b += 16;
    }
    for (int i = 0; i < 4; i++) {
        float *ci = c + (long)i * ldc;
        for (int j = 0; j < 16; j++) ci[j] = accumulate ? ci[j] + acc[i][j] : acc[i][j];
    }
}

static double fma_peak_generic(long iters) {
    float x[8][4];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) x[i][j] = (float)(i + j);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++)
            #pragma omp simd
            for (int j = 0; j < 4; j++) x[i][j] = x[i][j] * 0.9999999f + 1e-7f;
    volatile float sink = x[0][0] + x[7][3];
    (void)sink;
    return (double)iters * 8 * 4 * 2;
}

static const loop_gemm_kernel ISA_FN(gemm_fp32) = {
    .name = "generic", .precision = LOOP_FP32, .mr = 4, .nr = 16, .kpack = 1, .elem_bytes = 4, .can_stream = 0,
    .ukernel = ukernel_generic, .pack_a = pack_a_generic, .pack_b = pack_b_generic, .peak = fma_peak_generic};
static const loop_gemm_kernel gemm_bf16_portable = {
    .name = "portable (generic)", .precision = LOOP_BF16, .mr = 4, .nr = 16, .kpack = 1, .elem_bytes = 4,
    .can_stream = 0, .ukernel = ukernel_generic, .pack_a = pack_a_bf16r_generic, .pack_b = pack_b_bf16r_generic,
    .peak = fma_peak_generic};
const loop_isa_kernels loop_kernels_generic = {
    .name = "generic", .gemm_fp32 = &ISA_FN(gemm_fp32), .gemm_bf16_portable = &gemm_bf16_portable,
#include "isa_ops_fields.h"
};
