/* kernels_neon.c — aarch64 Advanced SIMD (NEON) build of every kernel: the 8x12 GEMM micro-kernel
 * below (24 of the 32 q registers accumulate, FMLA by lane), hand-written NEON versions of the hot
 * non-GEMM loops (ops_neon.h), and the remaining ops of ops_impl.h, which the compiler vectorises
 * for NEON. Compiled only for aarch64, where NEON is part of the baseline (no target pragma). */
#if defined(__aarch64__)
#include <arm_neon.h>
#define ISA_FN(name) name##_neon
#define ISA_OWN_HOT_LOOPS
#include "ops_impl.h"
#include "gemm_pack.h"
#include "ops_neon.h"

/* C[8,12] (+)= sum_k a[k][0..8] x b[k][0..12]: per k, two A loads (rows 0-3, 4-7), three B loads,
 * and 24 FMLAs, each multiplying a B vector by one lane of an A vector. */
static void ukernel_neon(int kc, const void *a_, const void *b_, float *restrict c, long ldc, int accumulate) {
    const float *restrict a = a_, *restrict b = b_;
#define ROW_INIT(i)                                                                                \
    float32x4_t c##i##0 = vdupq_n_f32(0.0f), c##i##1 = vdupq_n_f32(0.0f), c##i##2 = vdupq_n_f32(0.0f);
    ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5) ROW_INIT(6) ROW_INIT(7)
    for (int k = 0; k < kc; k++) {
        const float32x4_t a03 = vld1q_f32(a), a47 = vld1q_f32(a + 4);
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
#define ROW_FMA(i, av, lane)                                                                       \
    c##i##0 = vfmaq_laneq_f32(c##i##0, b0, av, lane);                                              \
    c##i##1 = vfmaq_laneq_f32(c##i##1, b1, av, lane);                                              \
    c##i##2 = vfmaq_laneq_f32(c##i##2, b2, av, lane);
        ROW_FMA(0, a03, 0) ROW_FMA(1, a03, 1) ROW_FMA(2, a03, 2) ROW_FMA(3, a03, 3)
        ROW_FMA(4, a47, 0) ROW_FMA(5, a47, 1) ROW_FMA(6, a47, 2) ROW_FMA(7, a47, 3)
        a += 8;
        b += 12;
    }
#define ROW_STORE(i)                                                                               \
    {                                                                                              \
        float *ci = c + (long)(i) * ldc;                                                           \
        if (accumulate) {                                                                          \
            c##i##0 = vaddq_f32(c##i##0, vld1q_f32(ci));                                           \
            c##i##1 = vaddq_f32(c##i##1, vld1q_f32(ci + 4));                                       \
            c##i##2 = vaddq_f32(c##i##2, vld1q_f32(ci + 8));                                       \
        }                                                                                          \
        vst1q_f32(ci, c##i##0);                                                                    \
        vst1q_f32(ci + 4, c##i##1);                                                                \
        vst1q_f32(ci + 8, c##i##2);                                                                \
    }
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5) ROW_STORE(6) ROW_STORE(7)
}

/* 12 independent FMA chains on registers (4-cycle latency x 2-4 FMA pipes needs 8-16) */
static double fma_peak_neon(long iters) {
    float32x4_t x[12];
    const float32x4_t m = vdupq_n_f32(0.9999999f), add = vdupq_n_f32(1e-7f);
    for (int i = 0; i < 12; i++) x[i] = vdupq_n_f32((float)i);
    for (long it = 0; it < iters; it++) {
        x[0] = vfmaq_f32(add, x[0], m); x[1] = vfmaq_f32(add, x[1], m);
        x[2] = vfmaq_f32(add, x[2], m); x[3] = vfmaq_f32(add, x[3], m);
        x[4] = vfmaq_f32(add, x[4], m); x[5] = vfmaq_f32(add, x[5], m);
        x[6] = vfmaq_f32(add, x[6], m); x[7] = vfmaq_f32(add, x[7], m);
        x[8] = vfmaq_f32(add, x[8], m); x[9] = vfmaq_f32(add, x[9], m);
        x[10] = vfmaq_f32(add, x[10], m); x[11] = vfmaq_f32(add, x[11], m);
    }
    float32x4_t s = x[0];
    for (int i = 1; i < 12; i++) s = vaddq_f32(s, x[i]);
    volatile float sink = vaddvq_f32(s);
    (void)sink;
    return (double)iters * 12 * 4 * 2;
}

static const loop_gemm_kernel ISA_FN(gemm_fp32) = {
    .name = "neon", .precision = LOOP_FP32, .mr = 8, .nr = 12, .kpack = 1, .elem_bytes = 4, .can_stream = 0,
    .ukernel = ukernel_neon, .pack_a = pack_a_neon, .pack_b = pack_b_neon, .peak = fma_peak_neon};
static const loop_gemm_kernel gemm_bf16_portable = {
    .name = "portable (neon FMA)", .precision = LOOP_BF16, .mr = 8, .nr = 12, .kpack = 1, .elem_bytes = 4,
    .can_stream = 0, .ukernel = ukernel_neon, .pack_a = pack_a_bf16r_neon, .pack_b = pack_b_bf16r_neon,
    .peak = fma_peak_neon};
const loop_isa_kernels loop_kernels_neon = {
    .name = "neon", .gemm_fp32 = &ISA_FN(gemm_fp32), .gemm_bf16_portable = &gemm_bf16_portable,
#include "isa_ops_fields.h"
};
#endif /* __aarch64__ */
