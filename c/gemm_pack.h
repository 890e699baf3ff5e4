/* gemm_pack.h — packing of fp32 GEMM panels (see gemm.c), compiled once per ISA.
 *
 * Included by kernels_<isa>.c after its `#pragma GCC target`, with ISA_FN(name) giving each copy
 * its own name. Two flavours share one body: plain fp32 panels, and the portable bf16 path's
 * panels, whose values are rounded to bf16 (round to nearest even) and stay fp32 in memory so
 * the ISA's own fp32 micro-kernel multiplies them exactly as bf16 hardware would. */
#include "bf16.h"
#include "isa_variants.h"

/* op(A) rows [i0, i0+m) x cols [k0, k0+kc) -> panels of mr rows: dst[panel][k][mr], zero-padded.
 * Transposed A is read one stored row (one k) at a time, so the reads stream through memory. */
static inline __attribute__((always_inline)) void ISA_FN(pack_a_body)(float *dst, const float *A, long lda, int trans,
                                                                       long i0, long k0, int m, int kc, int mr,
                                                                       const int round) {
    const int full = m / mr * mr;
    if (!trans) {
        for (int ip = 0; ip < m; ip += mr) {
            float *d = dst + (size_t)ip * kc;
            int rows = m - ip < mr ? m - ip : mr;
            for (int r = 0; r < rows; r++) {
                const float *src = A + (size_t)(i0 + ip + r) * lda + k0;
                for (int k = 0; k < kc; k++) d[(size_t)k * mr + r] = round ? bf16_round(src[k]) : src[k];
            }
            for (int r = rows; r < mr; r++)
                for (int k = 0; k < kc; k++) d[(size_t)k * mr + r] = 0.0f;
        }
        return;
    }
    for (int k = 0; k < kc; k++) {
        const float *src = A + (size_t)(k0 + k) * lda + i0;
        for (int ip = 0; ip < full; ip += mr) {
            float *d = dst + (size_t)ip * kc + (size_t)k * mr;
            #pragma omp simd
            for (int r = 0; r < mr; r++) d[r] = round ? bf16_round(src[ip + r]) : src[ip + r];
        }
        if (full < m) {
            float *d = dst + (size_t)full * kc + (size_t)k * mr;
            for (int r = 0; r < mr; r++) {
                float x = full + r < m ? src[full + r] : 0.0f;
                d[r] = round ? bf16_round(x) : x;
            }
        }
    }
}

/* op(B) rows [k0, k0+kc) x cols [j0, j0+n), n <= nr -> one panel dst[k][nr], zero-padded */
static inline __attribute__((always_inline)) void ISA_FN(pack_b_body)(float *dst, const float *B, long ldb, int trans,
                                                                       long k0, long j0, int n, int kc, int nr,
                                                                       const int round) {
    if (!trans) {
        for (int k = 0; k < kc; k++) {
            const float *src = B + (size_t)(k0 + k) * ldb + j0;
            float *dk = dst + (size_t)k * nr;
            #pragma omp simd
            for (int j = 0; j < n; j++) dk[j] = round ? bf16_round(src[j]) : src[j];
            for (int j = n; j < nr; j++) dk[j] = 0.0f;
        }
    } else {
        for (int j = 0; j < n; j++) {
            const float *src = B + (size_t)(j0 + j) * ldb + k0;
            for (int k = 0; k < kc; k++) dst[(size_t)k * nr + j] = round ? bf16_round(src[k]) : src[k];
        }
        for (int j = n; j < nr; j++)
            for (int k = 0; k < kc; k++) dst[(size_t)k * nr + j] = 0.0f;
    }
}

static void ISA_FN(pack_a)(void *dst, const float *A, long lda, int trans, long i0, long k0, int m, int kc, int mr) {
    ISA_FN(pack_a_body)((float *)dst, A, lda, trans, i0, k0, m, kc, mr, 0);
}
static void ISA_FN(pack_b)(void *dst, const float *B, long ldb, int trans, long k0, long j0, int n, int kc, int nr) {
    ISA_FN(pack_b_body)((float *)dst, B, ldb, trans, k0, j0, n, kc, nr, 0);
}
static void ISA_FN(pack_a_bf16r)(void *dst, const float *A, long lda, int trans, long i0, long k0, int m, int kc,
                                 int mr) {
    ISA_FN(pack_a_body)((float *)dst, A, lda, trans, i0, k0, m, kc, mr, 1);
}
static void ISA_FN(pack_b_bf16r)(void *dst, const float *B, long ldb, int trans, long k0, long j0, int n, int kc,
                                 int nr) {
    ISA_FN(pack_b_body)((float *)dst, B, ldb, trans, k0, j0, n, kc, nr, 1);
}
