/* kernels_avx2.c — AVX2+FMA build of every kernel: the 6x16 GEMM micro-kernel below (12 ymm
 * accumulators of the 16 registers), and the ops of ops_impl.h vectorised with ymm registers. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "internal.h"
#include "isa_variants.h"
/* every function from here on is compiled for AVX2+FMA (system headers are included above,
 * outside the region, so Clang's attribute never lands on them) */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define ISA_FN(name) name##_avx2
#include "ops_impl.h"
#include "gemm_pack.h"

static void ukernel_avx2(int kc, const void *a_, const void *b_, float *restrict c, long ldc, int accumulate) {
    const float *restrict a = a_, *restrict b = b_;
#define ROW_INIT(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
    ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5)
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#define ROW_FMA(i)                                                                                 \
    {                                                                                              \
        __m256 ai = _mm256_broadcast_ss(a + i);                                                    \
        c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                                                \
        c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                                                \
    }
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
        a += 6;
        b += 16;
    }
#define ROW_STORE(i)                                                                               \
    {                                                                                              \
        float *ci = c + (long)(i) * ldc;                                                           \
        if (accumulate) {                                                                          \
            c##i##0 = _mm256_add_ps(c##i##0, _mm256_loadu_ps(ci));                                 \
            c##i##1 = _mm256_add_ps(c##i##1, _mm256_loadu_ps(ci + 8));                             \
        }                                                                                          \
        _mm256_storeu_ps(ci, c##i##0);                                                             \
        _mm256_storeu_ps(ci + 8, c##i##1);                                                         \
    }
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)
}

static double fma_peak_avx2(long iters) {
    __m256 x[10];
    const __m256 m = _mm256_set1_ps(0.9999999f), add = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 10; i++) x[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
        x[0] = _mm256_fmadd_ps(x[0], m, add); x[1] = _mm256_fmadd_ps(x[1], m, add);
        x[2] = _mm256_fmadd_ps(x[2], m, add); x[3] = _mm256_fmadd_ps(x[3], m, add);
        x[4] = _mm256_fmadd_ps(x[4], m, add); x[5] = _mm256_fmadd_ps(x[5], m, add);
        x[6] = _mm256_fmadd_ps(x[6], m, add); x[7] = _mm256_fmadd_ps(x[7], m, add);
        x[8] = _mm256_fmadd_ps(x[8], m, add); x[9] = _mm256_fmadd_ps(x[9], m, add);
    }
    __m256 s = x[0];
    for (int i = 1; i < 10; i++) s = _mm256_add_ps(s, x[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    volatile float sink = lanes[0];
    (void)sink;
    return (double)iters * 10 * 8 * 2;
}

static const loop_gemm_kernel ISA_FN(gemm_fp32) = {
    .name = "avx2", .precision = LOOP_FP32, .mr = 6, .nr = 16, .kpack = 1, .elem_bytes = 4, .can_stream = 0,
    .ukernel = ukernel_avx2, .pack_a = pack_a_avx2, .pack_b = pack_b_avx2, .peak = fma_peak_avx2};
static const loop_gemm_kernel gemm_bf16_portable = {
    .name = "portable (avx2 FMA)", .precision = LOOP_BF16, .mr = 6, .nr = 16, .kpack = 1, .elem_bytes = 4,
    .can_stream = 0, .ukernel = ukernel_avx2, .pack_a = pack_a_bf16r_avx2, .pack_b = pack_b_bf16r_avx2,
    .peak = fma_peak_avx2};
const loop_isa_kernels loop_kernels_avx2 = {
    .name = "avx2", .gemm_fp32 = &ISA_FN(gemm_fp32), .gemm_bf16_portable = &gemm_bf16_portable,
#include "isa_ops_fields.h"
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif /* __x86_64__ */
