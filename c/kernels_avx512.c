/* kernels_avx512.c — AVX-512 build of every kernel: the 12x32 GEMM micro-kernel below, and the
 * ops of ops_impl.h vectorised with zmm registers. Only this file may contain AVX-512 code; it
 * runs only when runtime.c's dispatch selects it (valgrind hides AVX-512, so it never does). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "internal.h"
#include "isa_variants.h"
#if defined(__clang__) /* see kernels_avx2.c */
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#endif
#include "avx512_tile.h"
#define ISA_FN(name) name##_avx512
#include "ops_impl.h"
#include "gemm_pack.h"

/* C[12,32] (+)= sum_k a[k][0..12] x b[k][0..32]: 24 zmm accumulators, 2 B loads and 12
 * broadcasts per k. */
static void ukernel_avx512(int kc, const void *a_, const void *b_, float *restrict c, long ldc, int accumulate) {
    const float *restrict a = a_, *restrict b = b_;
    TILE12X32_PREFETCH()
#define ROW_INIT(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
    ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5)
    ROW_INIT(6) ROW_INIT(7) ROW_INIT(8) ROW_INIT(9) ROW_INIT(10) ROW_INIT(11)
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#define ROW_FMA(i)                                                                                 \
    {                                                                                              \
        __m512 ai = _mm512_set1_ps(a[i]);                                                          \
        c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);                                                \
        c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);                                                \
    }
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
        ROW_FMA(6) ROW_FMA(7) ROW_FMA(8) ROW_FMA(9) ROW_FMA(10) ROW_FMA(11)
        a += 12;
        b += 32;
    }
    TILE12X32_STORE()
}

/* 12 independent FMA chains (latency 4 x 2 ports needs 8) on registers only. */
static double fma_peak_avx512(long iters) {
    __m512 x[12];
    const __m512 m = _mm512_set1_ps(0.9999999f), add = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) x[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
        x[0] = _mm512_fmadd_ps(x[0], m, add); x[1] = _mm512_fmadd_ps(x[1], m, add);
        x[2] = _mm512_fmadd_ps(x[2], m, add); x[3] = _mm512_fmadd_ps(x[3], m, add);
        x[4] = _mm512_fmadd_ps(x[4], m, add); x[5] = _mm512_fmadd_ps(x[5], m, add);
        x[6] = _mm512_fmadd_ps(x[6], m, add); x[7] = _mm512_fmadd_ps(x[7], m, add);
        x[8] = _mm512_fmadd_ps(x[8], m, add); x[9] = _mm512_fmadd_ps(x[9], m, add);
        x[10] = _mm512_fmadd_ps(x[10], m, add); x[11] = _mm512_fmadd_ps(x[11], m, add);
    }
    __m512 s = x[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, x[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * 12 * 16 * 2;
}

/* In-register 16x16 transpose: unpack pairs, shuffle quads, then swap 128-bit lanes twice. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* Transposed B (stored N x K, e.g. the tied embedding in the LM head) is packed 16x16 blocks
 * at a time through registers instead of one strided store per element. */
static void pack_b_transpose_avx512(void *dst_, const float *B, long ldb, int trans, long k0, long j0, int n,
                                    int kc, int nr) {
    float *dst = dst_;
    if (!trans || n != 32 || nr != 32) {
        pack_b_avx512(dst, B, ldb, trans, k0, j0, n, kc, nr);
        return;
    }
    int k = 0;
    for (; k + 16 <= kc; k += 16) {
        for (int jb = 0; jb < 32; jb += 16) {
            __m512 r[16];
            for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(B + (size_t)(j0 + jb + j) * ldb + k0 + k);
            transpose16(r);
            for (int kk = 0; kk < 16; kk++) _mm512_store_ps(dst + (size_t)(k + kk) * nr + jb, r[kk]);
        }
    }
    for (; k < kc; k++)
        for (int j = 0; j < 32; j++) dst[(size_t)k * nr + j] = B[(size_t)(j0 + j) * ldb + k0 + k];
}

/* Row-major A (the forward and input-gradient GEMMs) goes into 12-row panels dst[k][12]: 12 rows
 * x 16 k are transposed through registers (4 zero rows pad the square) and each k written as one
 * 12-float masked store, instead of 12 scalar stores 48 bytes apart. */
static void pack_a_rows_avx512(void *dst_, const float *A, long lda, int trans, long i0, long k0, int m, int kc,
                               int mr) {
    float *dst = dst_;
    if (trans || mr != 12) {
        pack_a_avx512(dst, A, lda, trans, i0, k0, m, kc, mr);
        return;
    }
    const int full = m / 12 * 12;
    const int kfull = kc / 16 * 16;
    for (int ip = 0; ip < full; ip += 12) {
        float *d = dst + (size_t)ip * kc;
        const float *src = A + (size_t)(i0 + ip) * lda + k0;
        for (int k = 0; k < kfull; k += 16) {
            __m512 r[16];
            for (int i = 0; i < 12; i++) r[i] = _mm512_loadu_ps(src + (size_t)i * lda + k);
            for (int i = 12; i < 16; i++) r[i] = _mm512_setzero_ps();
            transpose16(r);
            for (int kk = 0; kk < 16; kk++) _mm512_mask_storeu_ps(d + (size_t)(k + kk) * 12, 0x0FFF, r[kk]);
        }
        for (int k = kfull; k < kc; k++)
            for (int i = 0; i < 12; i++) d[(size_t)k * 12 + i] = src[(size_t)i * lda + k];
    }
    if (full < m) pack_a_avx512(dst + (size_t)full * kc, A, lda, trans, i0 + full, k0, m - full, kc, mr);
}

static const loop_gemm_kernel ISA_FN(gemm_fp32) = {
    .name = "avx512", .precision = LOOP_FP32, .mr = 12, .nr = 32, .kpack = 1, .elem_bytes = 4, .can_stream = 1,
    .ukernel = ukernel_avx512, .pack_a = pack_a_rows_avx512, .pack_b = pack_b_transpose_avx512,
    .peak = fma_peak_avx512};
static const loop_gemm_kernel gemm_bf16_portable = {
    .name = "portable (avx512 FMA)", .precision = LOOP_BF16, .mr = 12, .nr = 32, .kpack = 1, .elem_bytes = 4,
    .can_stream = 1, .ukernel = ukernel_avx512, .pack_a = pack_a_bf16r_avx512, .pack_b = pack_b_bf16r_avx512,
    .peak = fma_peak_avx512};
const loop_isa_kernels loop_kernels_avx512 = {
    .name = "avx512", .gemm_fp32 = &ISA_FN(gemm_fp32), .gemm_bf16_portable = &gemm_bf16_portable,
#include "isa_ops_fields.h"
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif /* __x86_64__ */
